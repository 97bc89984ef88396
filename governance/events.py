"""Outcome events (**contract**): bodies and routing keys of ``transition.applied`` and
``transition.rejected``.

The ``sequence`` of an event is handed out by the event log when the event is stored, so the
bodies built here leave it out and :func:`with_sequence` adds it to what is published.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from governance.codec import actor_to_dict, decision_to_dict, request_to_dict, timestamp_to_wire
from governance.commands import Command
from governance.model import Actor, MutationRequest
from governance.rules import Applied, Rejection

APPLIED = "transition.applied"
REJECTED = "transition.rejected"


def applied_routing_key(command_type: str) -> str:
    """The routing key of a ``transition.applied`` event for ``command_type``."""
    return f"{APPLIED}.{command_type}"


def rejected_routing_key(code: str) -> str:
    """The routing key of a ``transition.rejected`` event for the rejection ``code``."""
    return f"{REJECTED}.{code}"


def applied_event(
    command: Command,
    applied: Applied,
    *,
    event_id: str,
    occurred_at: datetime,
    authenticated: bool = True,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """The ``transition.applied`` body for a command that moved its request on.

    ``authenticated`` says whether the command's signature was verified (False in
    development mode). ``actor``, when given, is who the event names instead of
    ``command.actor``: the registry's record of the sender, whose name and type the
    message itself cannot be trusted for.
    """
    return {
        "event_id": event_id,
        "event_type": APPLIED,
        "occurred_at": timestamp_to_wire(occurred_at),
        "command_id": command.command_id,
        "command_type": command.type.value,
        "request_id": command.request_id,
        "actor": actor_to_dict(command.actor if actor is None else actor),
        "authenticated": authenticated,
        "from_status": applied.from_status.value if applied.from_status else None,
        "to_status": applied.request.status.value,
        "revision": applied.request.revision,
        "decisions": [decision_to_dict(d) for d in applied.decisions],
        "request": request_to_dict(applied.request),
    }


def rejected_event(
    *,
    command_id: str,
    command_type: str | None,
    request_id: str | None,
    actor: Actor | Mapping[str, Any] | None,
    rejection: Rejection,
    current: MutationRequest | None,
    event_id: str,
    occurred_at: datetime,
    authenticated: bool = True,
) -> dict[str, Any]:
    """The ``transition.rejected`` body.

    The command parts are plain values because a command that failed validation has only
    what could be read from its message. ``authenticated`` says whether the deployment
    verifies signatures (False in development mode), as in :func:`applied_event`.
    """
    return {
        "event_id": event_id,
        "event_type": REJECTED,
        "occurred_at": timestamp_to_wire(occurred_at),
        "command_id": command_id,
        "command_type": command_type,
        "request_id": request_id,
        "actor": actor_to_dict(actor) if isinstance(actor, Actor) else actor,
        "authenticated": authenticated,
        "rejection": {
            "code": rejection.code.value,
            "message": rejection.message,
            "expected_revision": rejection.expected_revision,
            "current_revision": rejection.current_revision,
            "current_status": rejection.current_status.value if rejection.current_status else None,
        },
        "request": request_to_dict(current) if current is not None else None,
    }


def with_sequence(body: Mapping[str, Any], sequence: int) -> dict[str, Any]:
    """The event as published: its stored body plus the sequence the log gave it."""
    event = dict(body)
    event["sequence"] = sequence
    return event
