"""The checks every command shares (existence, then revision) and the per-command details
that are not lifecycle moves."""

from __future__ import annotations

import pytest

from governance.commands import parse_command
from governance.model import Status
from governance.rules import RejectionCode, decide

from .builders import (
    NON_SUBMIT_TYPES,
    NOW,
    REQUEST_ID,
    applied,
    command,
    command_payload,
    rejected,
    request_in_status,
)


@pytest.mark.parametrize("type_", NON_SUBMIT_TYPES)
def test_any_command_but_submit_on_a_missing_request_is_rejected_as_not_found(type_: str) -> None:
    # When a command addresses a request that does not exist
    rejection = rejected(decide(None, command(type_, 2), NOW))

    # Then it is refused as not found
    assert rejection.code is RejectionCode.NOT_FOUND
    assert rejection.expected_revision == 2
    assert rejection.current_revision is None
    assert rejection.current_status is None
    assert REQUEST_ID in rejection.message


@pytest.mark.parametrize("expected_revision", [0, 3, 5, 99])
@pytest.mark.parametrize("type_", NON_SUBMIT_TYPES)
def test_a_wrong_expected_revision_is_rejected_as_a_concurrency_conflict(
    type_: str, expected_revision: int
) -> None:
    # Given a request at revision 4
    current = request_in_status(Status.APPROVED, revision=4)

    # When a command expects another revision
    rejection = rejected(decide(current, command(type_, expected_revision), NOW))

    # Then it is refused, reporting the revision and status it lost to
    assert rejection.code is RejectionCode.CONCURRENCY_CONFLICT
    assert rejection.expected_revision == expected_revision
    assert rejection.current_revision == 4
    assert rejection.current_status is Status.APPROVED
    assert rejection.message == (
        f"expected revision {expected_revision}, but the request is at revision 4 (approved)"
    )


def test_the_revision_check_comes_before_the_lifecycle_rules() -> None:
    # Given a terminal request, which no command may move
    current = request_in_status(Status.EXECUTED, revision=4)

    # When a stale command is issued against it
    rejection = rejected(decide(current, command("cancel", 3), NOW))

    # Then the revision is what it is refused for
    assert rejection.code is RejectionCode.CONCURRENCY_CONFLICT


def test_two_commands_issued_against_the_same_snapshot_cannot_both_be_applied() -> None:
    # Given two commands issued against the same approved request at revision 4
    snapshot = request_in_status(Status.APPROVED, revision=4)
    first, second = command("mark_executed", 4), command("cancel", 4)

    # When the first is applied and the second meets the request it produced
    winner = applied(decide(snapshot, first, NOW)).request
    rejection = rejected(decide(winner, second, NOW))

    # Then the second loses, told the revision and status it lost to
    assert rejection.code is RejectionCode.CONCURRENCY_CONFLICT
    assert (rejection.current_revision, rejection.current_status) == (5, Status.EXECUTED)


def test_a_decision_carries_the_actor_reason_command_metadata_and_time() -> None:
    payload = command_payload("approve", expected_revision=3, actor_id="alice", reason="fine")
    payload["metadata"] = {"ticket": "OPS-7"}

    outcome = applied(decide(request_in_status(Status.CREATED), parse_command(payload), NOW))

    (decision,) = outcome.decisions
    assert decision.actor.id == "alice"
    assert decision.reason == "fine"
    assert decision.metadata == {"ticket": "OPS-7"}
    assert decision.occurred_at == NOW
