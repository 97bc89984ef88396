"""What one run of the guarded transaction writes, gathered so that it is one statement.

A run decides its commands one after another; each outcome adds an outbox event (and, when
recorded, a ledger row), and each applied command also its decisions, its proof and the new
state of its request. :class:`RunWrites` collects all of it in decision order and hands
:data:`worker.sql.WRITE_RUN` one JSON array per table, so that a batch of any size writes
each table once.

A request that several commands of the run change is written once, in the state the last of
them left it, guarded by the revision the run locked it at; its decisions keep the revision
each command gave it.

Each event is built here once, as it will be published: with the ``sequence`` it is stored
under (drawn for the run beforehand, :data:`worker.sql.DRAW_SEQUENCES`) and, when the worker
has a key, its ``proof``. Every path that publishes it later sends this stored event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from governance.commands import Command, CommandType
from governance.events import (
    applied_event,
    applied_routing_key,
    rejected_event,
    rejected_routing_key,
)
from governance.model import Actor, MutationRequest
from governance.proof import chain_hash, chained_decision
from governance.rules import Applied, Rejection
from producer.keys import SigningKey
from producer.signing import sign_event
from worker import event_signing
from worker.observability.context import trace_context_of


@dataclass(frozen=True, slots=True)
class EventWrite:
    """An outcome event of the run, as it will be read back once it has a sequence."""

    event_id: str
    body: dict[str, Any]
    routing_key: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """Where the ledger records an outcome: the namespace its ``command_id`` is unique in
    (the proved signer's), and the instant before which the database refuses to forget it
    (None: never)."""

    namespace: str
    keep_until: datetime | None


@dataclass(slots=True)
class RunWrites:
    """Everything a run writes, in the order it decided it."""

    events: list[EventWrite] = field(default_factory=list)
    #: The sequences drawn for this run's events, handed out in the order it decides them.
    sequences: list[int] = field(default_factory=list)
    #: The key the events are signed with (default: the worker's, if it has one).
    signer: SigningKey | None = field(default_factory=event_signing.installed)
    _event_rows: list[dict[str, Any]] = field(default_factory=list)
    _decision_rows: list[dict[str, Any]] = field(default_factory=list)
    _proof_rows: list[dict[str, Any]] = field(default_factory=list)
    #: request_id → the row as the run leaves it (insertion order: the order of decision).
    _request_rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def applied(
        self,
        command: Command,
        applied: Applied,
        *,
        digest: str,
        now: datetime,
        authenticated: bool,
        locked: MutationRequest | None,
        chain_head: str | None,
        signed_command: dict[str, Any],
        ledger: LedgerEntry,
        command_sha256: str | None = None,
    ) -> tuple[EventWrite, str | None]:
        """Add an applied command: its event, ledger row, decisions chained on from
        ``chain_head``, proof and request state. Returns the event and the new chain head.

        ``locked`` is the request as the run locked it (None for a submit): the revision the
        request write is guarded by."""
        request = applied.request
        body = applied_event(
            command,
            applied,
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            authenticated=authenticated,
            command_sha256=command_sha256,
        )
        head = chain_head
        for position, decision in enumerate(body["decisions"], start=1):
            head = chain_hash(
                head,
                chained_decision(
                    request.request_id, request.revision, position, command.command_id, decision
                ),
            )
            self._decision_rows.append(
                {
                    "request_id": request.request_id,
                    "revision": request.revision,
                    "position": position,
                    "command_id": command.command_id,
                    "decision": decision,
                    "chain_hash": head,
                }
            )
        self._proof_rows.append(
            {
                "request_id": request.request_id,
                "revision": request.revision,
                "command_id": command.command_id,
                "key_id": command.auth.key_id
                if command.auth is not None and authenticated
                else None,
                "signed_command": json.dumps(
                    signed_command, ensure_ascii=False, separators=(",", ":")
                ),
            }
        )
        self._request(request, command, locked, head, body["request"])
        event = self._event(
            command.command_id,
            digest,
            request.request_id,
            body,
            applied_routing_key(command.type.value),
            ledger=ledger,
            guarded=True,
        )
        return event, head

    def rejected(
        self,
        *,
        command_id: str,
        digest: str,
        command_type: str | None,
        request_id: str | None,
        actor: Actor | dict[str, Any] | None,
        rejection: Rejection,
        current: MutationRequest | None,
        now: datetime,
        authenticated: bool,
        ledger: LedgerEntry | None,
        command_sha256: str | None = None,
    ) -> EventWrite:
        """Add a rejection: its event, and its ledger row where ``ledger`` says (None: not
        recorded)."""
        body = rejected_event(
            command_id=command_id,
            command_type=command_type,
            request_id=request_id,
            actor=actor,
            rejection=rejection,
            current=current,
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            authenticated=authenticated,
            command_sha256=command_sha256,
        )
        return self._event(
            command_id,
            digest,
            request_id,
            body,
            rejected_routing_key(rejection.code.value),
            ledger=ledger,
            guarded=False,
        )

    def params(self) -> dict[str, str]:
        """The parameters of :data:`worker.sql.WRITE_RUN`."""
        # Only PostgreSQL reads these (its jsonb input normalises them), so the fastest
        # encoder will do; nothing is hashed or compared as text.
        return {
            "requests": _json(list(self._request_rows.values())),
            "decisions": _json(self._decision_rows),
            "proofs": _json(self._proof_rows),
            "events": _json(self._event_rows),
        }

    def _event(
        self,
        command_id: str,
        digest: str,
        request_id: str | None,
        body: dict[str, Any],
        routing_key: str,
        *,
        ledger: LedgerEntry | None,
        guarded: bool,
    ) -> EventWrite:
        position = len(self._event_rows)
        # The sequences were drawn in ascending order, and are handed out in the order the
        # run decided: a request's events keep its revision order.
        sequence = self.sequences[position]
        body["sequence"] = sequence
        # Without a key (development mode only) the event says so with a null proof.
        body = sign_event(body, self.signer) if self.signer is not None else {**body, "proof": None}
        event = EventWrite(body["event_id"], body, routing_key, request_id)
        self._event_rows.append(
            {
                "position": position,
                "sequence": sequence,
                "event_id": event.event_id,
                "event_type": body["event_type"],
                "command_id": command_id,
                "request_id": request_id,
                "routing_key": routing_key,
                "body": body,
                "payload_hash": digest,
                "record": ledger is not None,
                "namespace": None if ledger is None else ledger.namespace,
                "keep_until": None if ledger is None else ledger.keep_until,
                # Written only if its request write matched its guard.
                "guarded": guarded,
                # The worker span's traceparent (None untraced), published with the event.
                "trace_context": trace_context_of(command_id),
            }
        )
        self.events.append(event)
        return event

    def _request(
        self,
        request: MutationRequest,
        command: Command,
        locked: MutationRequest | None,
        chain_head: str | None,
        state: dict[str, Any],
    ) -> None:
        """``state`` is the request as the applied event carries it: the row is written from
        the same dictionary, never built a second time."""
        earlier = self._request_rows.get(request.request_id)
        if earlier is not None:
            inserted, locked_revision = earlier["inserted"], earlier["locked_revision"]
        else:
            inserted = command.type is CommandType.SUBMIT
            locked_revision = None if locked is None else locked.revision
        self._request_rows[request.request_id] = {
            **state,
            "inserted": inserted,
            "locked_revision": locked_revision,
            "chain_head": chain_head,
        }


def _json(rows: object) -> str:
    return msgspec.json.encode(rows).decode("utf-8")
