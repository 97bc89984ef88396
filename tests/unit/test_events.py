"""Outcome events: bodies, routing keys and sequence."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from governance.commands import parse_command
from governance.events import (
    AppliedEvent,
    RejectedEvent,
    applied_event,
    applied_routing_key,
    rejected_event,
    rejected_routing_key,
    with_sequence,
)
from governance.model import Actor, ActorType, Status
from governance.rules import Rejection, RejectionCode, decide
from tests.support.events import published

from .builders import (
    NOW,
    THREE_APPROVERS,
    applied,
    command,
    rejected,
    request_in_status,
    submit_payload,
)

APPLIED_FIELDS = {
    "event_id",
    "event_type",
    "occurred_at",
    "command_id",
    "command_type",
    "request_id",
    "actor",
    "authenticated",
    "from_status",
    "to_status",
    "revision",
    "decisions",
    "request",
}
REJECTED_FIELDS = {
    "event_id",
    "event_type",
    "occurred_at",
    "command_id",
    "command_type",
    "request_id",
    "actor",
    "authenticated",
    "rejection",
    "request",
}


def approve_event(**options: Any) -> dict[str, Any]:
    current = request_in_status(Status.PENDING, revision=3)
    cmd = command("approve", 3, actor_id="alice")
    return applied_event(
        cmd, applied(decide(current, cmd, NOW)), event_id="ev-1", occurred_at=NOW, **options
    )


def conflict_event(actor: Any = None, **options: Any) -> dict[str, Any]:
    current = request_in_status(Status.APPROVED, revision=4)
    cmd = command("cancel", 3, actor_id="bob")
    return rejected_event(
        command_id=cmd.command_id,
        command_type=cmd.type.value,
        request_id=cmd.request_id,
        actor=cmd.actor if actor is None else actor,
        rejection=rejected(decide(current, cmd, NOW)),
        current=current,
        event_id="ev-2",
        occurred_at=NOW,
        **options,
    )


def test_an_applied_event_has_the_contract_fields() -> None:
    event = approve_event()

    assert set(event) == APPLIED_FIELDS
    assert event["event_type"] == "transition.applied"
    assert (event["command_type"], event["from_status"], event["to_status"]) == (
        "approve",
        "pending",
        "approved",
    )
    assert event["revision"] == 4
    assert event["occurred_at"] == "2026-11-28T14:00:00Z"
    assert event["actor"] == {"id": "alice", "name": "Alice", "type": "user"}
    assert event["authenticated"] is True


@pytest.mark.parametrize("build", [approve_event, conflict_event], ids=["applied", "rejected"])
@pytest.mark.parametrize("authenticated", [True, False])
def test_an_event_says_whether_its_command_was_authenticated(
    build: Any, authenticated: bool
) -> None:
    # Given / When an event built in signed (True) or development (False) mode
    event = build(authenticated=authenticated)

    # Then it says so
    assert event["authenticated"] is authenticated


def test_an_applied_event_names_the_registered_actor_when_given_one() -> None:
    # Given the registry's record of alice, whose message called her otherwise
    registered = Actor(id="alice", name="Alice Liddell", type=ActorType.SERVICE)

    # When the event is built with it
    event = approve_event(actor=registered)

    # Then the event names her as the registry does, not as the message did
    assert event["actor"] == {"id": "alice", "name": "Alice Liddell", "type": "service"}


def test_an_applied_event_carries_only_the_decisions_the_command_appended() -> None:
    event = approve_event()

    assert [(d["category"], d["type"]) for d in event["decisions"]] == [("lifecycle", "approved")]


def test_an_applied_event_carries_the_request_without_its_history() -> None:
    event = approve_event()

    assert event["request"]["status"] == "approved"
    assert event["request"]["revision"] == 4
    assert "decisions" not in event["request"]


def test_an_applied_submit_event_has_no_previous_status() -> None:
    cmd = parse_command(submit_payload(approval_requirements=THREE_APPROVERS))
    event = applied_event(cmd, applied(decide(None, cmd, NOW)), event_id="e", occurred_at=NOW)

    assert event["from_status"] is None
    assert event["to_status"] == "pending"
    assert [d["type"] for d in event["decisions"]] == ["submitted", "pending", "requested"]


def test_a_rejected_event_has_the_contract_fields_and_the_conflict_it_lost_to() -> None:
    event = conflict_event()

    assert set(event) == REJECTED_FIELDS
    assert event["event_type"] == "transition.rejected"
    assert event["rejection"] == {
        "code": "concurrency_conflict",
        "message": "expected revision 3, but the request is at revision 4 (approved)",
        "expected_revision": 3,
        "current_revision": 4,
        "current_status": "approved",
    }
    assert event["request"]["revision"] == 4
    assert "decisions" not in event["request"]


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        pytest.param({"id": "whoever"}, {"id": "whoever"}, id="as-read-from-the-message"),
        pytest.param(
            Actor(id="bob", name="Bob"), {"id": "bob", "name": "Bob", "type": "user"}, id="parsed"
        ),
    ],
)
def test_a_rejected_event_takes_the_actor_as_read_or_as_parsed(
    actor: Any, expected: dict[str, Any]
) -> None:
    assert conflict_event(actor)["actor"] == expected


def test_a_rejected_event_for_an_unreadable_command_has_no_request() -> None:
    event = rejected_event(
        command_id="c-9",
        command_type=None,
        request_id=None,
        actor=None,
        rejection=Rejection(RejectionCode.INVALID_COMMAND, "type: required"),
        current=None,
        event_id="ev-3",
        occurred_at=NOW,
    )

    assert event["request"] is None
    assert event["actor"] is None
    assert event["rejection"]["current_status"] is None


@pytest.mark.parametrize("build", [approve_event, conflict_event], ids=["applied", "rejected"])
def test_an_event_is_strict_json(build: Any) -> None:
    event = with_sequence(build(), 1042)

    assert json.loads(json.dumps(event, allow_nan=False)) == event


def test_routing_keys_name_the_command_type_or_the_rejection_code() -> None:
    assert applied_routing_key("approve") == "transition.applied.approve"
    assert (
        rejected_routing_key("concurrency_conflict") == "transition.rejected.concurrency_conflict"
    )


def test_with_sequence_adds_the_sequence_and_leaves_the_stored_body_alone() -> None:
    body = approve_event()

    event = with_sequence(body, 1042)

    assert event["sequence"] == 1042
    assert {k: v for k, v in event.items() if k != "sequence"} == body
    assert "sequence" not in body


# --------------------------------------------------------------------------- typed models


def unreadable_command_event() -> dict[str, Any]:
    return rejected_event(
        command_id="c-9",
        command_type=None,
        request_id=None,
        actor={"id": "whoever", "role": "as sent"},
        rejection=Rejection(RejectionCode.INVALID_COMMAND, "type: required"),
        current=None,
        event_id="ev-3",
        occurred_at=NOW,
    )


def submit_event() -> dict[str, Any]:
    cmd = parse_command(submit_payload(approval_requirements=THREE_APPROVERS))
    return applied_event(cmd, applied(decide(None, cmd, NOW)), event_id="e", occurred_at=NOW)


@pytest.mark.parametrize(
    ("build", "model"),
    [
        pytest.param(approve_event, AppliedEvent, id="applied"),
        pytest.param(submit_event, AppliedEvent, id="applied-submit-with-requirements"),
        pytest.param(conflict_event, RejectedEvent, id="rejected"),
        pytest.param(unreadable_command_event, RejectedEvent, id="rejected-unreadable"),
    ],
)
def test_a_published_event_is_an_instance_of_its_model_unchanged(
    build: Any, model: type[msgspec.Struct]
) -> None:
    # Given an event as published (with its sequence and the worker's proof)
    event = published(build(), 7)

    # When it is read as its model (which refuses any member it does not declare)
    typed = msgspec.convert(event, model)

    # Then the model gives back the very same wire form
    assert msgspec.to_builtins(typed) == event


def test_an_event_model_refuses_an_undeclared_member() -> None:
    event = {**published(approve_event(), 7), "extra": 1}

    with pytest.raises(msgspec.ValidationError, match="unknown field `extra`"):
        msgspec.convert(event, AppliedEvent)


def test_an_event_of_a_development_mode_worker_without_a_key_has_a_null_proof() -> None:
    event = {**with_sequence(approve_event(authenticated=False), 7), "proof": None}

    assert msgspec.to_builtins(msgspec.convert(event, AppliedEvent)) == event


def test_an_event_model_refuses_an_event_without_its_proof() -> None:
    with pytest.raises(msgspec.ValidationError, match="missing required field `proof`"):
        msgspec.convert(with_sequence(approve_event(), 7), AppliedEvent)


def test_an_event_model_refuses_an_event_without_its_sequence() -> None:
    with pytest.raises(msgspec.ValidationError, match="missing required field `sequence`"):
        msgspec.convert(approve_event(), AppliedEvent)
