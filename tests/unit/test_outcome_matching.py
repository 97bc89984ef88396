"""Which outcome events answer an awaited command: its ``command_id`` and actor, and either
authenticated or naming a message sent for it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from governance.events import rejected_event
from governance.proof import command_sha256
from governance.rules import Rejection, RejectionCode
from producer.outcomes import AwaitedCommand

SENT = {
    "command_id": "approve-req-1-1",
    "type": "approve",
    "request_id": "req-1",
    "expected_revision": 1,
    "actor": {"id": "alice"},
    "auth": {"key_id": "k", "signature": "s"},
}


def refusal(actor: str, *, authenticated: bool, sha256: str | None) -> dict[str, Any]:
    return rejected_event(
        command_id="approve-req-1-1",
        command_type="approve",
        request_id="req-1",
        actor={"id": actor},
        rejection=Rejection(RejectionCode.UNAUTHENTICATED, "no"),
        current=None,
        event_id="e",
        occurred_at=datetime(2026, 12, 7, tzinfo=UTC),
        authenticated=authenticated,
        command_sha256=sha256,
    )


def awaited() -> AwaitedCommand:
    command = AwaitedCommand("approve-req-1-1", "alice")
    command.sending(SENT)
    return command


def test_an_authenticated_answer_for_its_command_id_and_actor_answers_it() -> None:
    assert awaited().answered_by(refusal("alice", authenticated=True, sha256=None))


def test_another_actor_s_answer_with_the_same_command_id_does_not() -> None:
    assert not awaited().answered_by(refusal("mallory", authenticated=True, sha256=None))


def test_an_unproved_answer_naming_another_message_does_not() -> None:
    forged = {k: v for k, v in SENT.items() if k != "auth"}
    event = refusal("alice", authenticated=False, sha256=command_sha256(forged))
    assert not awaited().answered_by(event)


def test_an_unproved_answer_naming_a_message_it_sent_does() -> None:
    event = refusal("alice", authenticated=False, sha256=command_sha256(SENT))
    assert awaited().answered_by(event)


def test_an_unproved_answer_naming_no_message_does_not() -> None:
    assert not awaited().answered_by(refusal("alice", authenticated=False, sha256=None))
