"""The guarded transaction: the one path every command takes.

validate → idempotency lookup → ``SELECT ... FOR UPDATE`` → existence → revision check →
the core's pure rule → guarded write (request, decisions, ledger row, outbox row) → commit.

Called on a connection in autocommit mode it is its own transaction; called inside an open
transaction (a batch, an expiry sweep) ``conn.transaction()`` becomes a savepoint, so each
command stays atomic and independent of its neighbours.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from governance.codec import (
    actor_from_dict,
    actor_to_dict,
    intent_from_dict,
    intent_to_dict,
    requirement_from_dict,
    requirement_to_dict,
)
from governance.commands import (
    REQUEST_ID_PATTERN,
    Command,
    CommandType,
    InvalidCommand,
    canonical_json,
    command_id_of,
    parse_actor,
    parse_command,
    payload_hash,
)
from governance.events import (
    APPLIED,
    applied_event,
    applied_routing_key,
    rejected_event,
    rejected_routing_key,
    with_sequence,
)
from governance.model import MutationRequest, PendingReason, RequestContext, Status
from governance.rules import Applied, Rejection, RejectionCode, decide
from worker import sql
from worker.errors import InfrastructureError, TransientConflict, translate

#: Reruns of a transaction that lost a benign race (see ``TransientConflict``).
MAX_ATTEMPTS = 5


class NotACommand(ValueError):
    """A message without a usable ``command_id``: it cannot be answered, only dead-lettered."""


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """A command's outcome event as the log holds it."""

    event: dict[str, Any]
    routing_key: str
    sequence: int
    #: True when the ledger already knew the command and this is its recorded outcome.
    replayed: bool

    @property
    def applied(self) -> bool:
        return bool(self.event["event_type"] == APPLIED)


@dataclass(frozen=True, slots=True)
class _Write:
    request_write: sql.RequestWrite
    record: bool
    params: dict[str, Any]
    body: dict[str, Any]
    routing_key: str


def apply_command(conn: psycopg.Connection[Any], payload: object) -> StoredOutcome:
    """Apply one command message and return its outcome, recorded in the same transaction.

    Raises :class:`NotACommand` for a message that has no usable ``command_id`` and
    :class:`InfrastructureError` for faults worth retrying; every other outcome, rejections
    included, is a returned value.
    """
    command_id = command_id_of(payload)
    if command_id is None:
        raise NotACommand("the message is not an object with a usable command_id")
    assert isinstance(payload, dict)
    digest = payload_hash(payload)
    try:
        command: Command | None = parse_command(payload)
        invalid: InvalidCommand | None = None
    except InvalidCommand as exc:
        command, invalid = None, exc

    for _ in range(MAX_ATTEMPTS):
        try:
            return _attempt(conn, payload, command_id, digest, command, invalid)
        except TransientConflict:
            continue
        except psycopg.Error as exc:
            translated = translate(exc)
            if isinstance(translated, TransientConflict):
                continue
            raise translated from exc
    raise InfrastructureError(f"command {command_id} kept losing races after {MAX_ATTEMPTS} runs")


def _attempt(
    conn: psycopg.Connection[Any],
    payload: dict[str, Any],
    command_id: str,
    digest: str,
    command: Command | None,
    invalid: InvalidCommand | None,
) -> StoredOutcome:
    with conn.pipeline(), conn.transaction():
        lookup = conn.execute(sql.LOOKUP, {"command_id": command_id})
        lock = (
            conn.execute(sql.LOCK_REQUEST, {"request_id": command.request_id})
            if command is not None
            else None
        )
        db_now, known_hash, known_sequence, known_key, known_body = _one(lookup)
        if known_hash == digest:
            return StoredOutcome(
                with_sequence(known_body, known_sequence), known_key, known_sequence, True
            )
        if invalid is not None:
            # Recorded, so a redelivery gets the same answer; unless the id is taken by
            # another command, which keeps its own record.
            write = _rejection_write(
                payload,
                command_id,
                digest,
                db_now,
                None,
                Rejection(RejectionCode.INVALID_COMMAND, invalid.message),
                record=known_hash is None,
            )
        elif known_hash is not None:
            assert command is not None
            write = _rejection_write(
                payload,
                command_id,
                digest,
                db_now,
                None,
                Rejection(
                    RejectionCode.DUPLICATE_COMMAND,
                    f"command_id {command_id} was already used for a different command",
                ),
                record=False,
            )
        else:
            assert command is not None and lock is not None
            row = lock.fetchone()
            current = request_from_row(row) if row is not None else None
            outcome = decide(current, command, db_now)
            if isinstance(outcome, Applied):
                write = _applied_write(command, outcome, digest, db_now)
            else:
                write = _rejection_write(
                    payload, command_id, digest, db_now, current, outcome, record=True
                )
        cursor = conn.execute(sql.WRITE[write.request_write, write.record], write.params)
    # The pipeline has synced with the COMMIT: the write's result is here now.
    written = cursor.fetchone()
    if written is None:
        # The guard matched nothing (a concurrent submit of the same request won the insert),
        # so nothing was written; a rerun sees the winner and answers accordingly.
        raise TransientConflict(f"guarded write for {command_id} matched no row")
    sequence = int(written[0])
    return StoredOutcome(with_sequence(write.body, sequence), write.routing_key, sequence, False)


def _one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def _applied_write(command: Command, applied: Applied, digest: str, now: datetime) -> _Write:
    request = applied.request
    body = applied_event(command, applied, event_id=str(uuid.uuid4()), occurred_at=now)
    routing_key = applied_routing_key(command.type.value)
    params: dict[str, Any] = {
        "request_id": request.request_id,
        "status": request.status.value,
        "pending_reason": request.pending_reason.value if request.pending_reason else None,
        "approval_requirements": canonical_json(
            [requirement_to_dict(r) for r in request.approval_requirements]
        ),
        "expected_state_version": request.expected_state_version,
        "expires_at": request.expires_at,
        "updated_at": request.updated_at,
        "metadata": canonical_json(request.metadata),
        "expected_revision": command.expected_revision,
        "decisions": canonical_json(body["decisions"]),
        **_event_params(command.command_id, digest, command.request_id, body, routing_key),
    }
    if command.type is CommandType.SUBMIT:
        params.update(
            state_id=request.state_id,
            state_type=request.state_type,
            mutation_type=request.mutation_type,
            intent=canonical_json(intent_to_dict(request.intent)),
            context=canonical_json(
                {"actor": actor_to_dict(request.context.actor), "reason": request.context.reason}
            ),
            revision=request.revision,
            created_at=request.created_at,
        )
        kind = sql.RequestWrite.INSERT
    else:
        kind = sql.RequestWrite.UPDATE
    return _Write(kind, True, params, body, routing_key)


def _rejection_write(
    payload: Mapping[str, Any],
    command_id: str,
    digest: str,
    now: datetime,
    current: MutationRequest | None,
    rejection: Rejection,
    *,
    record: bool,
) -> _Write:
    command_type, request_id, actor = _readable_parts(payload)
    body = rejected_event(
        command_id=command_id,
        command_type=command_type,
        request_id=request_id,
        actor=actor,
        rejection=rejection,
        current=current,
        event_id=str(uuid.uuid4()),
        occurred_at=now,
    )
    routing_key = rejected_routing_key(rejection.code.value)
    params = _event_params(command_id, digest, request_id, body, routing_key)
    return _Write(sql.RequestWrite.NONE, record, params, body, routing_key)


def _event_params(
    command_id: str, digest: str, request_id: str | None, body: dict[str, Any], routing_key: str
) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "payload_hash": digest,
        "event_id": body["event_id"],
        "event_type": body["event_type"],
        "event_request_id": request_id,
        "routing_key": routing_key,
        "body": canonical_json(body),
    }


def _readable_parts(
    payload: Mapping[str, Any],
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """What a rejection can safely echo of a message that may have failed validation."""
    raw_type = payload.get("type")
    command_type = raw_type if raw_type in CommandType._value2member_map_ else None
    raw_request = payload.get("request_id")
    request_id = (
        raw_request
        if isinstance(raw_request, str) and REQUEST_ID_PATTERN.fullmatch(raw_request)
        else None
    )
    try:
        actor: dict[str, Any] | None = actor_to_dict(parse_actor(payload.get("actor")))
    except InvalidCommand:
        actor = None
    return command_type, request_id, actor


def request_from_row(row: tuple[Any, ...]) -> MutationRequest:
    """The request as locked, without its decision history (no rule reads it)."""
    (
        request_id,
        state_id,
        state_type,
        mutation_type,
        intent,
        context,
        status,
        pending_reason,
        requirements,
        revision,
        expected_state_version,
        expires_at,
        created_at,
        updated_at,
        metadata,
    ) = row
    return MutationRequest(
        request_id=request_id,
        state_id=state_id,
        state_type=state_type,
        mutation_type=mutation_type,
        intent=intent_from_dict(intent),
        context=RequestContext(
            actor=actor_from_dict(context["actor"]), reason=context.get("reason")
        ),
        status=Status(status),
        pending_reason=PendingReason(pending_reason) if pending_reason else None,
        approval_requirements=tuple(requirement_from_dict(r) for r in requirements),
        revision=revision,
        expected_state_version=expected_state_version,
        expires_at=expires_at,
        created_at=created_at,
        updated_at=updated_at,
        metadata=metadata,
    )
