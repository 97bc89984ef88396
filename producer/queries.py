"""Read-only queries on the governance database: requests, history, the pending queue, the
event log.

Every connection is opened read-only (``SET TRANSACTION READ ONLY`` by psycopg's
``read_only``, or ``default_transaction_read_only`` for the log's paged reader): the producer
never writes. Results are built with ``governance.codec`` so they have the same shape as the
``request`` of an event.
"""

from __future__ import annotations

from collections.abc import Generator
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
    request_from_dict,
    request_to_dict,
    timestamp_to_wire,
)
from governance.events import with_sequence
from governance.model import Decision, MutationRequest
from producer.event_log import LogPosition, catch_up, connect_reader

_REQUEST_COLUMNS = (
    "request_id, state_id, state_type, mutation_type, intent, context, status, pending_reason,"
    " approval_requirements, revision, expected_state_version, expires_at, created_at,"
    " updated_at, metadata"
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
