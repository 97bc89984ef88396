"""History forged as whoever holds the worker's database role can: appending decisions,
kept commands and the row they account for, with every chain hash right.

The forger is thorough: the decisions it appends are the very ones the core gives for the
command it pretends was applied (so their shape, their chain and the row all agree), and it
moves the row in the same transaction, so the database's guard accepts it. What it cannot
do is make the *kept* command, the registry or the policy say what its decisions need:
re-execution is what finds that.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from governance.codec import request_from_dict, request_to_dict, timestamp_to_wire
from governance.commands import parse_command
from governance.events import applied_event
from governance.model import Actor, ActorType, MutationRequest
from governance.policy import REQUESTER_MODE, PolicyMode
from governance.proof import chain_hash, chained_decision
from governance.rules import Applied, decide
from tests.integration.test_trust_schema import connect_as, login_role, worker_role

#: The row columns a revision changes (as the worker's own update writes them).
_UPDATED = (
    "status",
    "pending_reason",
    "approval_requirements",
    "revision",
    "expires_at",
    "updated_at",
    "metadata",
)
_INSERTED = (
    "request_id",
    "state_id",
    "state_type",
    "mutation_type",
    "intent",
    "context",
    "status",
    "pending_reason",
    "approval_requirements",
    "revision",
    "expected_state_version",
    "expires_at",
    "created_at",
    "updated_at",
    "metadata",
    "policy",
)
_JSON = frozenset({"intent", "context", "approval_requirements", "metadata", "policy"})


@contextlib.contextmanager
def as_worker_role(
    db: psycopg.Connection[Any], database_url: str
) -> Iterator[psycopg.Connection[Any]]:
    """A connection with the least privilege a deployment gives its workers."""
    with login_role(db, worker_role(db)) as role, connect_as(database_url, role) as worker:
        yield worker


def unsigned(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` without its ``auth`` member (what the core parses)."""
    return {name: value for name, value in payload.items() if name != "auth"}


def forge_revision(
    conn: psycopg.Connection[Any],
    request_id: str,
    *,
    kept: Mapping[str, Any],
    key_id: str | None,
    applied: Mapping[str, Any] | None = None,
    actor_name: str | None = None,
    groups: frozenset[str] = frozenset(),
    policy: PolicyMode = REQUESTER_MODE,
    occurred_at: datetime | None = None,
    superseding: MutationRequest | None = None,
    legacy: bool = False,
    row_changes: Mapping[str, Any] | None = None,
    pretend: Callable[[MutationRequest], MutationRequest] | None = None,
    edit_row: Callable[[dict[str, Any]], None] | None = None,
) -> Applied:
    """Append the next revision of ``request_id``: the decisions the core gives for
    ``applied`` (a command payload; ``kept`` itself when left out) with its actor named as
    the registry names it, chained after the row's head; ``kept`` kept as its command (with
    ``key_id``); and the row moved to what those decisions leave, all in one transaction.
    ``legacy``: written as before the chain existed (no chain hash, no kept command).
    ``row_changes``: columns of the row set otherwise than the decisions leave them.
    ``pretend``: the request as the forger pretends it stood (the core decides on that);
    ``edit_row``: changes the row the decisions leave (its wire form) before it is written.
    Returns what the core gave."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM mutation_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        now = occurred_at or cur.execute("SELECT clock_timestamp() AS now").fetchone()["now"]
    current = None
    if row is not None:
        current = request_from_dict(
            {k: timestamp_to_wire(v) if isinstance(v, datetime) else v for k, v in row.items()}
        )
    if current is not None and pretend is not None:
        current = pretend(current)
    command = parse_command(unsigned(applied if applied is not None else kept))
    actor_id = command.actor.id
    named = Actor(
        actor_id,
        name=actor_name if actor_name is not None else actor_id.title(),
        type=ActorType.SYSTEM if actor_id == "system" else ActorType.USER,
    )
    command = replace(command, actor=named)
    outcome = decide(current, command, now, superseding, groups=groups, policy=policy)
    assert isinstance(outcome, Applied), outcome
    revision = outcome.request.revision
    decisions = applied_event(command, outcome, event_id="forged", occurred_at=now)["decisions"]
    previous = None if row is None else row["chain_head"]
    hashes: list[str | None] = []
    for position, decision in enumerate(decisions, start=1):
        previous = chain_hash(
            previous,
            chained_decision(request_id, revision, position, command.command_id, decision),
        )
        hashes.append(previous)
    state = request_to_dict(outcome.request)
    if edit_row is not None:
        edit_row(state)
    values = {
        name: json.dumps(state.get(name)) if name in _JSON else state.get(name)
        for name in _INSERTED
    }
    if legacy:
        hashes = [None] * len(decisions)
        previous = None if row is None else row["chain_head"]
    values["chain_head"] = previous
    changed = dict(row_changes or {})
    values.update(
        {name: json.dumps(value) if name in _JSON else value for name, value in changed.items()}
    )
    with conn.transaction():
        if row is None:
            columns = (*_INSERTED, "chain_head")
            conn.execute(
                f"INSERT INTO mutation_requests ({', '.join(columns)})"
                f" VALUES ({', '.join(f'%({name})s' for name in columns)})",
                values,
            )
        else:
            columns = (*_UPDATED, "chain_head", *(c for c in changed if c not in _UPDATED))
            assignments = ", ".join(f"{name} = %({name})s" for name in columns)
            conn.execute(
                f"UPDATE mutation_requests SET {assignments} WHERE request_id = %(request_id)s",
                values,
            )
        for position, (decision, hashed) in enumerate(zip(decisions, hashes, strict=True), 1):
            conn.execute(
                "INSERT INTO request_decisions (request_id, revision, position, command_id,"
                " category, type, actor, actor_id, reason, metadata, occurred_at, chain_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    request_id,
                    revision,
                    position,
                    command.command_id,
                    decision["category"],
                    decision["type"],
                    json.dumps(decision["actor"]),
                    decision["actor"]["id"],
                    decision.get("reason"),
                    json.dumps(decision.get("metadata") or {}),
                    now,
                    hashed,
                ),
            )
        if legacy:
            return outcome
        conn.execute(
            "INSERT INTO command_proofs (request_id, revision, command_id, key_id, signed_command)"
            " VALUES (%s, %s, %s, %s, %s)",
            (request_id, revision, kept.get("command_id"), key_id, json.dumps(kept)),
        )
    return outcome
