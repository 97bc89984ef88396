"""``supersede``: the superseding request must exist, be another request and be live; the
transaction locks it along with the superseded one."""

from __future__ import annotations

import pytest

from governance.commands import parse_command
from governance.lifecycle import SUPERSEDING_STATUSES
from governance.model import Status
from governance.rules import RejectionCode, decide, requests_to_lock

from .builders import (
    ALL_TYPES,
    NOW,
    REQUEST_ID,
    SUPERSEDING_ID,
    applied,
    command,
    issue,
    rejected,
    request_in_status,
    submit_payload,
    superseding_request,
)

LIVE = [Status.CREATED, Status.PENDING, Status.APPROVED, Status.EXECUTED]
ENDED = [Status.SUPERSEDED, Status.CANCELED, Status.REJECTED, Status.EXPIRED]


def test_the_live_statuses_are_the_four_a_request_may_supersede_from() -> None:
    assert set(LIVE) == SUPERSEDING_STATUSES
    assert set(LIVE) | set(ENDED) == set(Status)


@pytest.mark.parametrize("successor_status", LIVE, ids=str)
def test_a_live_request_supersedes_another(successor_status: Status) -> None:
    # Given an approved request and a live request to replace it
    current = request_in_status(Status.APPROVED)

    # When it is superseded by that request
    outcome = applied(
        issue(current, "supersede", superseding=superseding_request(successor_status))
    )

    # Then it is superseded, one revision on
    assert outcome.request.status is Status.SUPERSEDED
    assert outcome.request.revision == current.revision + 1


def test_supersede_records_the_superseding_request() -> None:
    outcome = applied(
        issue(
            request_in_status(Status.APPROVED),
            "supersede",
            superseding_request_id="req-99",
            superseding=superseding_request(request_id="req-99"),
        )
    )

    assert outcome.decisions[0].metadata == {"superseding_request_id": "req-99"}
    assert outcome.request.metadata == {"origin": "unit-test", "superseded_by": "req-99"}


def test_a_superseding_request_that_does_not_exist_is_rejected_as_not_found() -> None:
    # Given an approved request at revision 3
    current = request_in_status(Status.APPROVED, revision=3)

    # When it is superseded by a request the worker found no row for
    rejection = rejected(issue(current, "supersede", superseding=None))

    # Then it is refused as not found, naming the superseding request
    assert rejection.code is RejectionCode.NOT_FOUND
    assert rejection.message == f"superseding request {SUPERSEDING_ID} does not exist"
    assert (rejection.current_revision, rejection.current_status) == (3, Status.APPROVED)


@pytest.mark.parametrize("successor_status", ENDED, ids=str)
def test_a_superseding_request_that_ended_is_rejected_as_an_invalid_transition(
    successor_status: Status,
) -> None:
    # Given an approved request at revision 3
    current = request_in_status(Status.APPROVED, revision=3)

    # When it is superseded by a request that itself ended without effect
    rejection = rejected(
        issue(current, "supersede", superseding=superseding_request(successor_status))
    )

    # Then it is refused, saying what the superseding request is
    assert rejection.code is RejectionCode.INVALID_TRANSITION
    assert rejection.message.startswith(
        f"superseding request {SUPERSEDING_ID} is {successor_status.value};"
    )
    assert (rejection.current_revision, rejection.current_status) == (3, Status.APPROVED)


def test_a_request_cannot_supersede_itself() -> None:
    # Given an approved request
    current = request_in_status(Status.APPROVED, revision=3)

    # When it is superseded by itself
    rejection = rejected(
        issue(current, "supersede", superseding_request_id=REQUEST_ID, superseding=current)
    )

    # Then the command is refused as invalid, naming the field
    assert rejection.code is RejectionCode.INVALID_COMMAND
    assert rejection.message.startswith("args.superseding_request_id:")
    assert (rejection.current_revision, rejection.current_status) == (3, Status.APPROVED)


@pytest.mark.parametrize(
    ("successor_id", "successor_status"),
    [
        pytest.param(SUPERSEDING_ID, None, id="missing"),
        pytest.param(SUPERSEDING_ID, Status.CANCELED, id="ended"),
        pytest.param(REQUEST_ID, None, id="itself"),
    ],
)
def test_a_revision_conflict_wins_over_the_superseding_checks(
    successor_id: str, successor_status: Status | None
) -> None:
    # Given a request at revision 4 and a superseding request the rule would refuse
    current = request_in_status(Status.APPROVED, revision=4)
    successor = None if successor_status is None else superseding_request(successor_status)

    # When a supersede expecting revision 3 is decided
    stale = command("supersede", 3, superseding_request_id=successor_id)
    rejection = rejected(decide(current, stale, NOW, successor))

    # Then it is refused for the revision
    assert rejection.code is RejectionCode.CONCURRENCY_CONFLICT


def test_a_missing_superseding_request_is_reported_before_the_table() -> None:
    # Given an executed request, which the table does not let be superseded
    current = request_in_status(Status.EXECUTED)

    # When it is superseded by a request that does not exist
    rejection = rejected(issue(current, "supersede", superseding=None))

    # Then the missing request is what it is refused for
    assert rejection.code is RejectionCode.NOT_FOUND


def test_the_table_still_decides_once_the_superseding_request_is_live() -> None:
    rejection = rejected(
        issue(request_in_status(Status.EXECUTED), "supersede", superseding=superseding_request())
    )

    assert rejection.code is RejectionCode.INVALID_TRANSITION
    assert rejection.message == "cannot move from executed to superseded"


def test_a_superseding_request_other_than_the_one_named_is_a_caller_error() -> None:
    # Given a supersede naming req-43, and the worker handing over req-44
    current = request_in_status(Status.APPROVED)

    # When it is decided, then the mismatch is raised rather than judged
    with pytest.raises(ValueError, match=r"req-44.*req-43"):
        issue(current, "supersede", superseding=superseding_request(request_id="req-44"))


@pytest.mark.parametrize("type_", ["approve", "cancel", "move_to_pending"])
def test_other_command_types_ignore_a_superseding_request(type_: str) -> None:
    current = request_in_status(Status.CREATED)
    cmd = command(type_, current.revision)

    assert decide(current, cmd, NOW, superseding_request(Status.CANCELED)) == decide(
        current, cmd, NOW
    )


@pytest.mark.parametrize("type_", [t for t in ALL_TYPES if t not in ("submit", "supersede")])
def test_a_command_locks_only_the_request_it_addresses(type_: str) -> None:
    assert requests_to_lock(command(type_, 1)) == (REQUEST_ID,)


def test_a_submit_locks_only_the_request_it_creates() -> None:
    assert requests_to_lock(parse_command(submit_payload())) == (REQUEST_ID,)


def test_a_supersede_also_locks_the_superseding_request() -> None:
    assert requests_to_lock(command("supersede", 1)) == (REQUEST_ID, SUPERSEDING_ID)


def test_a_self_supersede_locks_its_request_once() -> None:
    cmd = command("supersede", 1, superseding_request_id=REQUEST_ID)

    assert requests_to_lock(cmd) == (REQUEST_ID,)


@pytest.mark.parametrize(("first", "second"), [("req-a", "req-b"), ("req-b", "req-a")])
def test_of_two_requests_superseding_each_other_only_the_first_applied_wins(
    first: str, second: str
) -> None:
    # Given two approved requests, and a supersede of each by the other
    rows = {rid: request_in_status(Status.APPROVED, request_id=rid) for rid in (first, second)}
    by_other = {
        rid: command("supersede", 3, request_id=rid, superseding_request_id=other)
        for rid, other in ((first, second), (second, first))
    }
    # Both transactions lock the same two rows, so in one global order they run one by one
    assert set(requests_to_lock(by_other[first])) == set(requests_to_lock(by_other[second]))

    # When the first transaction supersedes its request and commits
    winner = applied(decide(rows[first], by_other[first], NOW, rows[second]))
    rows[first] = winner.request

    # Then the second sees its superseding request superseded, and is refused
    rejection = rejected(decide(rows[second], by_other[second], NOW, rows[first]))
    assert rejection.code is RejectionCode.INVALID_TRANSITION
    assert rejection.message.startswith(f"superseding request {first} is superseded;")
    assert (rejection.current_revision, rejection.current_status) == (3, Status.APPROVED)
