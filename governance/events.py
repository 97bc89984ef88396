"""Outcome events (**contract**): bodies and routing keys of ``transition.applied`` and
``transition.rejected``.

The ``sequence`` of an event is drawn from the event log before the event is stored, so the
bodies built here leave it out: the worker adds it, and its ``proof`` (the worker's signature
over the event as published, see :class:`EventProof`), before it stores the event.

:class:`AppliedEvent` and :class:`RejectedEvent` are the typed models of the published
events, from which ``governance.schema`` derives their JSON Schemas; the builders below
write plain dictionaries (what is stored and hashed), and the tests hold the two together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from governance.codec import actor_to_dict, decision_to_dict, request_to_dict, timestamp_to_wire
from governance.commands import Command, CommandType, Timestamp
from governance.model import (
    Actor,
    ActorType,
    ApprovalStatus,
    BlastScope,
    DecisionCategory,
    MutationRequest,
    PendingReason,
    RequirementSource,
    RiskLevel,
    Status,
)
from governance.rules import Applied, Rejection, RejectionCode

APPLIED = "transition.applied"
REJECTED = "transition.rejected"

Sequence = Annotated[int, Meta(ge=1, description="the event's position in the event log")]
CommandSha256 = Annotated[
    str,
    Meta(
        pattern="^[0-9a-f]{64}$",
        description=(
            "on an answer to a command whose sender was not proved (authenticated false) "
            "only: the SHA-256 (hex) of the RFC 8785 canonical JSON of the command message "
            "as received, auth included; a client takes as the answer to its command only "
            "an event for its command_id and actor that is authenticated or carries the "
            "command_sha256 of a message it sent"
        ),
    ),
]


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every member is always present (``null`` when it has no value), but for the ones
    with a default, which are optional (added to the contract later)."""


class EventActor(_Body, frozen=True):
    id: str
    name: str | None
    type: ActorType


class EventBlastRadius(_Body, frozen=True):
    scope: BlastScope
    estimated_affected_count: int
    description: str


class EventIntent(_Body, frozen=True):
    operation_name: str
    category: str
    description: str
    risk_level: RiskLevel
    is_reversible: bool
    blast_radius: EventBlastRadius
    tags: list[str]
    metadata: dict[str, Any]


class EventGrant(_Body, frozen=True):
    actor_id: str
    decided_at: Timestamp
    reason: str | None


class EventRequirement(_Body, frozen=True):
    approval_id: str
    approver_id: str | None
    approver_group: str | None
    min_approvals: int
    approver_name: str | None
    description: str | None
    step_order: int
    status: ApprovalStatus
    decided_at: Timestamp | None
    decided_by: str | None
    reason: str | None
    grants: list[EventGrant]
    source: RequirementSource


class EventDecision(_Body, frozen=True):
    category: DecisionCategory
    type: str
    actor: EventActor
    reason: str | None
    metadata: dict[str, Any]
    occurred_at: Timestamp


class EventContext(_Body, frozen=True):
    actor: EventActor
    reason: str | None


class EventPolicyReference(_Body, frozen=True):
    """The approval policy a request was submitted under, and the rule that matched it."""

    version: int
    sha256: str
    rule_id: str


class EventRequest(_Body, frozen=True):
    """The request as it stands after the command, without its history. ``policy`` is null
    when the requester chose its own requirements (requester mode)."""

    request_id: str
    state_id: str
    state_type: str
    mutation_type: str
    intent: EventIntent
    context: EventContext
    status: Status
    pending_reason: PendingReason | None
    approval_requirements: list[EventRequirement]
    revision: int
    expected_state_version: str | None
    expires_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    metadata: dict[str, Any]
    policy: EventPolicyReference | None


class EventRejection(_Body, frozen=True):
    code: RejectionCode
    message: str
    expected_revision: int | None
    current_revision: int | None
    current_status: Status | None


class EventProof(_Body, frozen=True):
    """The publishing worker's signature (**contract**). ``signature`` is the Ed25519
    signature (base64url, no padding) of the worker key ``key_id`` over the UTF-8 bytes of
    the RFC 8785 (JCS) canonical JSON of the whole event, ``sequence`` included, without its
    ``proof`` member. To verify: drop ``proof``, canonicalise with RFC 8785, and check the
    signature with the registered public key of ``key_id``, which must belong to an active
    actor holding the ``worker`` role and not be revoked. Act on no event that does not
    verify. ``proof`` is null only from a worker in development mode (``authenticated:
    false``) that has no key."""

    key_id: Annotated[str, Meta(min_length=1, max_length=128)]
    signature: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{86}$")]


class AppliedEvent(_Body, frozen=True, omit_defaults=True):
    """``transition.applied``: a command moved its request on (routing key
    ``transition.applied.<command_type>``)."""

    event_id: str
    event_type: Literal["transition.applied"]
    occurred_at: Timestamp
    command_id: str
    command_type: CommandType
    request_id: str
    actor: EventActor
    authenticated: bool
    from_status: Status | None
    to_status: Status
    revision: int
    decisions: list[EventDecision]
    request: EventRequest
    sequence: Sequence
    proof: EventProof | None
    #: Only on an answer to a command whose sender was not proved (``authenticated``
    #: false): the SHA-256 (hex) of the RFC 8785 canonical JSON of the command message as
    #: received, ``auth`` included. A client takes as the answer to its command only an event
    #: for its ``command_id`` and actor that is authenticated or names a message it sent.
    command_sha256: CommandSha256 | None = None


class RejectedEvent(_Body, frozen=True, omit_defaults=True):
    """``transition.rejected``: a command was answered but not applied (routing key
    ``transition.rejected.<code>``). A command that failed validation has only what could be
    read from its message: its type, request and actor may be missing or as sent."""

    event_id: str
    event_type: Literal["transition.rejected"]
    occurred_at: Timestamp
    command_id: str
    command_type: str | None
    request_id: str | None
    actor: dict[str, Any] | None
    authenticated: bool
    rejection: EventRejection
    request: EventRequest | None
    sequence: Sequence
    proof: EventProof | None
    #: Only on an answer to a command whose sender was not proved (``authenticated``
    #: false): the SHA-256 (hex) of the RFC 8785 canonical JSON of the command message as
    #: received, ``auth`` included. A client takes as the answer to its command only an event
    #: for its ``command_id`` and actor that is authenticated or names a message it sent.
    command_sha256: CommandSha256 | None = None


#: The model of each event, by its type.
EVENT_MODELS: dict[str, type[msgspec.Struct]] = {APPLIED: AppliedEvent, REJECTED: RejectedEvent}


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
    command_sha256: str | None = None,
) -> dict[str, Any]:
    """The ``transition.applied`` body for a command that moved its request on.

    ``authenticated`` says whether the command's signature was verified (False in
    development mode). ``actor``, when given, is who the event names instead of
    ``command.actor``: the registry's record of the sender, whose name and type the
    message itself cannot be trusted for.
    """
    body = {
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
    return _naming_the_message(body, command_sha256)


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
    command_sha256: str | None = None,
) -> dict[str, Any]:
    """The ``transition.rejected`` body.

    The command parts are plain values because a command that failed validation has only
    what could be read from its message. ``authenticated`` says whether the sender was
    proved (its signature verified; False in development mode), as in :func:`applied_event`.
    ``command_sha256``, given for an answer to a sender who was not proved, names the message
    it answers (see :func:`governance.proof.command_sha256`).
    """
    body = {
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
    return _naming_the_message(body, command_sha256)


def _naming_the_message(body: dict[str, Any], command_sha256: str | None) -> dict[str, Any]:
    """``body`` with the ``command_sha256`` of the message it answers, when given (an answer
    to a sender who was not proved)."""
    if command_sha256 is not None:
        body["command_sha256"] = command_sha256
    return body


def with_sequence(body: Mapping[str, Any], sequence: int) -> dict[str, Any]:
    """The event as published: its stored body plus the sequence the log gave it."""
    event = dict(body)
    event["sequence"] = sequence
    return event
