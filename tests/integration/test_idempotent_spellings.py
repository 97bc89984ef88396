"""Idempotency by meaning: a re-send of a command that is spelled differently (defaults
spelled out, instants in another time zone) is the same command and gets its recorded
outcome; a re-send that means something else is a ``duplicate_command``."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import (
    Sender,
    ledger_snapshot,
    send_and_wait,
    wait_for_events,
)
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.processes import WorkerProcess
from tests.support.signed import DEVELOPMENT, apply_command

pytestmark = [pytest.mark.integration, pytest.mark.system]


def answers_to(events: EventListener, command_id: str, at_least: int) -> list[dict[str, Any]]:
    wait_for_events(
        events,
        lambda received: sum(e["command_id"] == command_id for e in received) >= at_least,
        f"{at_least} answer(s) to {command_id}",
    )
    return events.of(command_id)


def approve_spelled_tersely(request_id: str) -> dict[str, Any]:
    payload = command("approve", request_id, 1)
    payload["issued_at"] = "2026-12-05T09:00:00Z"
    return payload


def spelled_out(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its defaults spelled out and its stamp in another time zone."""
    again = copy.deepcopy(payload)
    again.update(reason=None, metadata={}, issued_at="2026-12-05T10:00:00+01:00")
    again["actor"].update(type="user", name=None)
    return again


def test_a_resend_spelled_with_its_defaults_gets_the_recorded_outcome_from_the_worker(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    # Given a pending request and an approve that was applied and answered
    request_id = new_id()
    created = send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    assert created["event_type"] == "transition.applied", created
    approve = approve_spelled_tersely(request_id)
    first = send_and_wait(sender, events, approve)
    assert first["event_type"] == "transition.applied", first
    before = ledger_snapshot(db, request_id)

    # When it is sent again with reason null, actor type user spelled out and the stamp in
    # +01:00
    sender.send(spelled_out(approve))
    answers = answers_to(events, approve["command_id"], at_least=2)

    # Then the recorded outcome is published again (same event_id and sequence), not a
    # duplicate_command, and nothing changed
    assert {(e["event_id"], e["sequence"], e["event_type"]) for e in answers} == {
        (first["event_id"], first["sequence"], "transition.applied")
    }
    assert ledger_snapshot(db, request_id) == before


def test_a_submit_resent_with_its_derived_and_default_fields_spelled_out_is_the_same(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    # Given a submit that gave as little as it could and was applied
    request_id = new_id()
    terse = submit(request_id, requirements=[{"approver_id": "alice"}])
    first = send_and_wait(sender, events, terse)
    assert first["event_type"] == "transition.applied", first
    before = ledger_snapshot(db, request_id)

    # When it is re-sent with the status it implied and the intent's defaults spelled out
    verbose = copy.deepcopy(terse)
    verbose["args"].update(initial_status="pending", pending_reason="approval", metadata={})
    verbose["args"]["intent"].update(
        category="general", description="", is_reversible=True, tags=[], blast_radius={}
    )
    verbose["args"]["approval_requirements"][0].update(step_order=1, approver_name=None)
    sender.send(verbose)
    answers = answers_to(events, terse["command_id"], at_least=2)

    # Then it is answered with the submit's recorded outcome
    assert {(e["event_id"], e["event_type"]) for e in answers} == {
        (first["event_id"], "transition.applied")
    }
    assert ledger_snapshot(db, request_id) == before


def test_a_respelled_resend_replays_and_a_changed_one_is_a_duplicate_in_the_transaction(
    db: psycopg.Connection[Any],
) -> None:
    # Given an approve applied through the guarded transaction
    request_id = new_id()
    assert apply_command(db, submit(request_id, initial_status="pending")).applied
    approve = approve_spelled_tersely(request_id)
    first = apply_command(db, approve)
    assert first.applied, first.event

    # When it comes again spelled out, and once more with another reason
    respelled = apply_command(db, spelled_out(approve))
    changed = apply_command(db, {**approve, "reason": "another reason"})

    # Then the first re-send is the recorded outcome; the second is another command
    assert respelled.replayed
    assert respelled.event["event_id"] == first.event["event_id"]
    assert not changed.applied
    assert changed.event["rejection"]["code"] == "duplicate_command"


def test_in_development_mode_an_invalid_command_resent_verbatim_gets_its_recorded_refusal(
    db: psycopg.Connection[Any],
) -> None:
    # Given, in development mode, a command refused as invalid (an instant past 9999 in UTC)
    payload = command(
        "move_to_pending",
        new_id(),
        1,
        args={"pending_reason": "approval", "expires_at": "9999-12-31T23:00:00-14:00"},
    )
    first = apply_command(db, payload, DEVELOPMENT)
    assert first.event["rejection"]["code"] == "invalid_command", first.event
    assert first.event["rejection"]["message"].startswith("args.expires_at: ")

    # When the very same message comes again
    again = apply_command(db, copy.deepcopy(payload), DEVELOPMENT)

    # Then it is answered with the recorded refusal
    assert again.replayed
    assert again.event["event_id"] == first.event["event_id"]


def test_in_signed_mode_an_invalid_command_is_answered_but_does_not_take_its_command_id(
    db: psycopg.Connection[Any],
) -> None:
    # Given a signed command refused as invalid
    request_id = new_id()
    apply_command(db, submit(request_id))
    invalid = command(
        "move_to_pending",
        request_id,
        1,
        args={"pending_reason": "approval", "expires_at": "9999-12-31T23:00:00-14:00"},
    )
    first = apply_command(db, invalid)
    assert first.event["rejection"]["code"] == "invalid_command", first.event
    # When a valid command comes with the same command_id
    valid = command(
        "move_to_pending",
        request_id,
        1,
        args={"pending_reason": "approval"},
        command_id=invalid["command_id"],
    )
    outcome = apply_command(db, valid)
    # Then it is applied: the invalid one was answered, not recorded
    assert not first.replayed
    assert outcome.event["event_type"] == "transition.applied", outcome.event
