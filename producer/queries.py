"""Read-only queries on the governance database: requests, history, the pending queue, what
an approver may decide now and why a request needs what it needs, the event log.

Every connection is opened read-only (``SET TRANSACTION READ ONLY`` by psycopg's
``read_only``, or ``default_transaction_read_only`` for the log's paged reader): the producer
never writes. Results are built with ``governance.codec`` so they have the same shape as the
``request`` of an event.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from governance import urls
from governance.codec import (
    decision_from_dict,
    decision_to_dict,
    policy_reference_to_dict,
    request_from_dict,
    request_to_dict,
    requirement_to_dict,
    timestamp_to_wire,
)
from governance.events import with_sequence
from governance.model import ApprovalRequirement, ApprovalStatus, Decision, MutationRequest
from governance.proof import b64url_decode
from producer.event_log import LogPosition, catch_up, connect_reader
from producer.event_proof import TrustedKey

_REQUEST_COLUMNS = (
    "request_id, state_id, state_type, mutation_type, intent, context, status, pending_reason,"
    " approval_requirements, revision, expected_state_version, expires_at, created_at,"
    " updated_at, metadata, policy"
)
_DECISION_COLUMNS = (
    "request_id, revision, position, command_id, category, type, actor, reason, metadata,"
    " occurred_at"
)


@dataclass(frozen=True)
class HistoryEntry:
    """One decision with where it came from: the command and the revision it produced."""

    request_id: str
    revision: int
    position: int
    command_id: str
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "revision": self.revision,
            "position": self.position,
            "command_id": self.command_id,
            **decision_to_dict(self.decision),
        }


@dataclass(frozen=True)
class RequestView:
    """A request as it stands, with its full decision history (``request.decisions``)."""

    request: MutationRequest
    history: tuple[HistoryEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        body = request_to_dict(self.request)
        body["decisions"] = [entry.to_dict() for entry in self.history]
        return body


#: Who may decide each pending requirement of a request's open step (the lowest step with a
#: pending requirement), in one statement: every actor the requirement names or whose group
#: it names, with what decides whether it may (active, the approver role, an unrevoked key,
#: not already a decider of the request; the submitter is told apart by the caller). With the
#: rule of the policy version the request was submitted under, as its document has it.
EXPLAIN = f"""
WITH request AS (
    SELECT {_REQUEST_COLUMNS} FROM mutation_requests WHERE request_id = %(request_id)s
), requirement AS (
    SELECT q.body FROM request, jsonb_array_elements(request.approval_requirements) AS q(body)
), open_step AS (
    SELECT min((requirement.body->>'step_order')::int) AS step
    FROM request, requirement
    WHERE request.status = 'pending' AND request.pending_reason = 'approval'
      AND requirement.body->>'status' = 'pending'
), decider AS (
    SELECT requirement.body->>'decided_by' AS actor_id
    FROM requirement WHERE requirement.body->>'decided_by' IS NOT NULL
    UNION
    SELECT given.body->>'actor_id'
    FROM requirement,
         jsonb_array_elements(coalesce(requirement.body->'grants', '[]')) AS given(body)
)
SELECT request.*,
    (SELECT step FROM open_step) AS open_step,
    (SELECT rule.body
     FROM policy_versions AS v, jsonb_array_elements(v.document->'rules') AS rule(body)
     WHERE v.version = (request.policy->>'version')::int
       AND rule.body->>'id' = request.policy->>'rule_id') AS rule,
    (SELECT coalesce(jsonb_object_agg(requirement.body->>'approval_id', members.list), '{{}}')
     FROM requirement, open_step, LATERAL (
         SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'actor_id', a.actor_id,
                    'active', a.active,
                    'approver', a.roles @> ARRAY['approver'],
                    'has_key', EXISTS (SELECT FROM actor_keys AS k
                                       WHERE k.actor_id = a.actor_id AND k.revoked_at IS NULL),
                    'decider', EXISTS (SELECT FROM decider WHERE decider.actor_id = a.actor_id))
                    ORDER BY a.actor_id), '[]') AS list
         FROM actors AS a
         WHERE a.actor_id = requirement.body->>'approver_id'
            OR a.groups @> ARRAY[requirement.body->>'approver_group']
     ) AS members
     WHERE requirement.body->>'status' = 'pending'
       AND (requirement.body->>'step_order')::int = open_step.step) AS members
FROM request
"""

#: The requests an approver may decide now, in one statement: pending approval, not its own,
#: not already decided by it, with a pending requirement of their open step that names it
#: or one of its groups. The candidates come from the GIN index on the pending requests'
#: requirements (one containment probe for the actor and one per group), and only an
#: actor that may approve at all (active, the approver role, an unrevoked key) has any.
PENDING_FOR = f"""
WITH me AS (
    SELECT a.actor_id, a.groups FROM actors AS a
    WHERE a.actor_id = %(actor_id)s AND a.active AND a.roles @> ARRAY['approver']
      AND EXISTS (SELECT FROM actor_keys AS k
                  WHERE k.actor_id = a.actor_id AND k.revoked_at IS NULL)
), probe AS (
    SELECT jsonb_build_array(jsonb_build_object('approver_id', me.actor_id,
                                                'status', 'pending')) AS shape
    FROM me
    UNION ALL
    SELECT jsonb_build_array(jsonb_build_object('approver_group', g.name, 'status', 'pending'))
    FROM me, unnest(me.groups) AS g(name)
)
SELECT {", ".join(f"r.{c.strip()}" for c in _REQUEST_COLUMNS.split(","))}, mine.approval_ids
FROM mutation_requests AS r
CROSS JOIN me
CROSS JOIN LATERAL (
    SELECT array_agg(q.body->>'approval_id' ORDER BY q.position) AS approval_ids
    FROM jsonb_array_elements(r.approval_requirements) WITH ORDINALITY AS q(body, position)
    WHERE q.body->>'status' = 'pending'
      AND (q.body->>'approver_id' = me.actor_id OR q.body->>'approver_group' = ANY (me.groups))
      AND (q.body->>'step_order')::int = (
          SELECT min((p.body->>'step_order')::int)
          FROM jsonb_array_elements(r.approval_requirements) AS p(body)
          WHERE p.body->>'status' = 'pending')
) AS mine
WHERE r.status = 'pending'
  AND r.approval_requirements @> ANY (ARRAY(SELECT shape FROM probe))
  AND r.pending_reason = 'approval'
  AND r.context->'actor'->>'id' <> me.actor_id
  AND NOT EXISTS (
      SELECT FROM jsonb_array_elements(r.approval_requirements) AS d(body)
      WHERE d.body->>'decided_by' = me.actor_id
         OR d.body->'grants' @> jsonb_build_array(jsonb_build_object('actor_id', me.actor_id)))
  AND mine.approval_ids IS NOT NULL
  AND (%(state_id)s::text IS NULL OR r.state_id = %(state_id)s)
ORDER BY r.created_at, r.request_id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class RequirementExplanation:
    """One requirement of a request, and who may decide it now.

    ``may_decide_now`` lists the actors who may decide a pending requirement of the open
    step now: eligible (active, the approver role, an unrevoked key, named or a member of
    its group), not the submitter, and not already a decider of the request (holding a
    grant on one of its requirements, or having decided one). ``not_eligible`` names the
    others it names or whose group it names, and why. A pending requirement of a later
    step cannot be decided before the open step is done: ``waiting_for_step`` says which
    step that is.
    """

    requirement: ApprovalRequirement
    may_decide_now: tuple[str, ...] = ()
    not_eligible: tuple[tuple[str, str], ...] = ()
    waiting_for_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **requirement_to_dict(self.requirement),
            "may_decide_now": list(self.may_decide_now),
            "not_eligible": [
                {"actor_id": actor_id, "reason": reason} for actor_id, reason in self.not_eligible
            ],
            "waiting_for_step": self.waiting_for_step,
        }


@dataclass(frozen=True)
class Explanation:
    """Why a request needs what it needs, and who may decide it now.

    ``request.policy`` is the policy version and rule it was submitted under (None: the
    requester's own requirements, in requester mode), ``rule`` that rule as the version's
    document has it, and ``open_step`` the lowest step with a pending requirement while the
    request is pending approval (None otherwise): only its requirements can be decided now.
    """

    request: MutationRequest
    rule: Mapping[str, Any] | None
    open_step: int | None
    requirements: tuple[RequirementExplanation, ...]

    @property
    def submitter(self) -> str:
        return self.request.context.actor.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request.request_id,
            "status": self.request.status.value,
            "pending_reason": (
                self.request.pending_reason.value if self.request.pending_reason else None
            ),
            "revision": self.request.revision,
            "submitter": self.submitter,
            "policy": policy_reference_to_dict(self.request.policy),
            "rule": None if self.rule is None else dict(self.rule),
            "open_step": self.open_step,
            "requirements": [r.to_dict() for r in self.requirements],
        }


@dataclass(frozen=True)
class Decidable:
    """A request an approver may decide now, and the requirements of its open step that
    the approver may decide (it decides at most one of them)."""

    request: MutationRequest
    approval_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**request_to_dict(self.request), "may_decide": list(self.approval_ids)}


def _explained(
    requirement: ApprovalRequirement,
    open_step: int | None,
    members: Mapping[str, list[dict[str, Any]]],
    submitter: str,
) -> RequirementExplanation:
    if requirement.status is not ApprovalStatus.PENDING or open_step is None:
        return RequirementExplanation(requirement)
    if requirement.step_order != open_step:
        return RequirementExplanation(requirement, waiting_for_step=open_step)
    may, refused = [], []
    found = members.get(requirement.approval_id, [])
    if requirement.approver_id is not None and not found:
        refused.append((requirement.approver_id, "not registered"))
    for member in found:
        reasons = [
            reason
            for reason, holds in (
                ("the submitter", member["actor_id"] == submitter),
                ("inactive", not member["active"]),
                ("no role approver", not member["approver"]),
                ("no unrevoked key", not member["has_key"]),
                ("already a decider of this request", member["decider"]),
            )
            if holds
        ]
        if reasons:
            refused.append((member["actor_id"], ", ".join(reasons)))
        else:
            may.append(member["actor_id"])
    return RequirementExplanation(requirement, tuple(may), tuple(refused))


def _connect(database_url: str) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(database_url, row_factory=dict_row, autocommit=False)
    conn.read_only = True
    return conn


def _wire_times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: timestamp_to_wire(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _request_from_row(row: dict[str, Any], decisions: tuple[Decision, ...] = ()) -> MutationRequest:
    request = request_from_dict(_wire_times(row))
    if not decisions:
        return request
    data = request_to_dict(request)
    data["decisions"] = [decision_to_dict(d) for d in decisions]
    return request_from_dict(data)


def _entry_from_row(row: dict[str, Any]) -> HistoryEntry:
    wire = _wire_times(row)
    return HistoryEntry(
        request_id=row["request_id"],
        revision=row["revision"],
        position=row["position"],
        command_id=row["command_id"],
        decision=decision_from_dict(wire),
    )


class Queries:
    """Read-only queries; each call uses its own short read-only transaction."""

    def __init__(self, database_url: str) -> None:
        self.database_url = urls.database_url(database_url, "database_url")

    def request(self, request_id: str) -> RequestView | None:
        """A request with its full decision history, or None when it does not exist."""
        with _connect(self.database_url) as conn:
            # One transaction for both reads; the request row and its history agree because
            # history rows commit with the row update that produced them.
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            row = conn.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM mutation_requests WHERE request_id = %s",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            history = tuple(
                _entry_from_row(r)
                for r in conn.execute(
                    f"SELECT {_DECISION_COLUMNS} FROM request_decisions WHERE request_id = %s"
                    " ORDER BY revision, position",
                    (request_id,),
                )
            )
        return RequestView(_request_from_row(row, tuple(e.decision for e in history)), history)

    def pending(
        self,
        *,
        state_id: str | None = None,
        pending_reason: str | None = None,
        approver_id: str | None = None,
        limit: int = 100,
    ) -> list[MutationRequest]:
        """Pending requests, oldest first. ``approver_id`` keeps those with a requirement
        still pending for that approver (any step)."""
        clauses = ["status = 'pending'"]
        params: dict[str, Any] = {"limit": limit}
        if state_id is not None:
            clauses.append("state_id = %(state_id)s")
            params["state_id"] = state_id
        if pending_reason is not None:
            clauses.append("pending_reason = %(pending_reason)s")
            params["pending_reason"] = pending_reason
        if approver_id is not None:
            # jsonb containment, served by the GIN index on approval_requirements.
            clauses.append("approval_requirements @> %(approver)s::jsonb")
            params["approver"] = Jsonb([{"approver_id": approver_id, "status": "pending"}])
        sql = (
            f"SELECT {_REQUEST_COLUMNS} FROM mutation_requests WHERE {' AND '.join(clauses)}"
            " ORDER BY created_at, request_id LIMIT %(limit)s"
        )
        with _connect(self.database_url) as conn:
            return [_request_from_row(r) for r in conn.execute(sql, params)]

    def explain(self, request_id: str) -> Explanation | None:
        """Why request ``request_id`` needs what it needs (the policy version and rule it
        was submitted under, every requirement with its source, step, status and grants)
        and who may decide each pending requirement now; None when there is no such
        request. One statement."""
        with _connect(self.database_url) as conn:
            row = conn.execute(EXPLAIN, {"request_id": request_id}).fetchone()
        if row is None:
            return None
        open_step, rule, members = row.pop("open_step"), row.pop("rule"), row.pop("members")
        request = _request_from_row(row)
        submitter = request.context.actor.id
        return Explanation(
            request=request,
            rule=rule,
            open_step=open_step,
            requirements=tuple(
                _explained(r, open_step, members or {}, submitter)
                for r in request.approval_requirements
            ),
        )

    def pending_for(
        self, actor_id: str, *, state_id: str | None = None, limit: int = 100
    ) -> list[Decidable]:
        """The requests ``actor_id`` may decide now, oldest first: pending approval, with a
        pending requirement of their open step that names it or one of its groups, not
        submitted by it, and none of whose requirements it has decided or holds a grant
        on; the actor itself active, an approver, with an unrevoked key. One statement."""
        params = {"actor_id": actor_id, "state_id": state_id, "limit": limit}
        with _connect(self.database_url) as conn:
            rows = conn.execute(PENDING_FOR, params).fetchall()
        found = []
        for row in rows:
            approval_ids = tuple(row.pop("approval_ids"))
            found.append(Decidable(_request_from_row(row), approval_ids))
        return found

    def decisions_by_actor(
        self,
        actor_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1_000,
    ) -> list[HistoryEntry]:
        """Decisions taken by an actor, oldest first, in ``[since, until)``."""
        clauses = ["actor_id = %(actor_id)s"]
        params: dict[str, Any] = {"actor_id": actor_id, "limit": limit}
        if since is not None:
            clauses.append("occurred_at >= %(since)s")
            params["since"] = since
        if until is not None:
            clauses.append("occurred_at < %(until)s")
            params["until"] = until
        sql = (
            f"SELECT {_DECISION_COLUMNS} FROM request_decisions WHERE {' AND '.join(clauses)}"
            " ORDER BY occurred_at, id LIMIT %(limit)s"
        )
        with _connect(self.database_url) as conn:
            return [_entry_from_row(r) for r in conn.execute(sql, params)]

    def latest_event(self, request_id: str) -> dict[str, Any] | None:
        """The last applied event of a request from the event log, or None."""
        with _connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT sequence, body FROM outbox_events"
                " WHERE request_id = %s AND event_type = 'transition.applied'"
                " ORDER BY sequence DESC LIMIT 1",
                (request_id,),
            ).fetchone()
        return None if row is None else with_sequence(row["body"], row["sequence"])

    def worker_keys(self) -> list[TrustedKey]:
        """The keys outcome events may be signed with: every key (revoked ones with their
        time of revocation) of an active actor holding the ``worker`` role."""
        with _connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT k.key_id, k.public_key, k.actor_id, k.revoked_at"
                " FROM actor_keys AS k JOIN actors AS a ON a.actor_id = k.actor_id"
                " WHERE a.active AND 'worker' = ANY(a.roles) AND k.scheme = 'ed25519'"
            ).fetchall()
        return [
            TrustedKey(
                key_id=row["key_id"],
                public_key=b64url_decode(row["public_key"]),
                actor_id=row["actor_id"],
                revoked_at=row["revoked_at"],
            )
            for row in rows
        ]

    def last_sequence(self) -> int:
        """The highest sequence visible now (0 for an empty log)."""
        with _connect(self.database_url) as conn:
            row = conn.execute("SELECT coalesce(max(sequence), 0) AS s FROM outbox_events")
            found = row.fetchone()
        return int(found["s"]) if found else 0


def read_event_log(
    database_url: str, since_sequence: int, *, batch_size: int = 1_000
) -> Generator[dict[str, Any], None, None]:
    """Every event of the log with ``sequence > since_sequence`` committed before the first
    event is asked for, each exactly once, per request in revision order.

    The log is read in pages of ``batch_size`` on a read-only autocommit connection, each page
    one short statement (see ``producer.event_log``): no transaction stays open between
    pages, so a slow consumer holds back no vacuum. It ends once a snapshot taken by its first
    page is caught up with, so everything committed before that page is yielded; events
    committed while it reads may be yielded too, later ones are not (follow them live, as
    :func:`producer.subscriptions.replay` does). Closing the generator closes the connection.
    """
    with connect_reader(database_url) as conn:
        for page in catch_up(conn, LogPosition(since=since_sequence), page_size=batch_size):
            yield from page.events
