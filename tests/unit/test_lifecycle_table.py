"""The transition table, exhaustively, through the commands that target each status."""

from __future__ import annotations

import pytest

from governance.lifecycle import ALLOWED_TRANSITIONS, TERMINAL_STATUSES, can_transition, is_terminal
from governance.model import DecisionCategory, MutationRequest, PendingReason, Status
from governance.rules import Outcome, RejectionCode

from .builders import LATER, NOW, applied, issue, rejected, request_in_status, superseding_request

S = Status

#: The contract's allowed transitions, written out independently of governance.lifecycle.
CONTRACT_TABLE: dict[Status, set[Status]] = {
    S.CREATED: {S.PENDING, S.APPROVED, S.CANCELED, S.SUPERSEDED},
    S.PENDING: {S.APPROVED, S.REJECTED, S.CANCELED, S.EXPIRED, S.SUPERSEDED},
    S.APPROVED: {S.PENDING, S.REJECTED, S.CANCELED, S.SUPERSEDED, S.EXECUTED},
    S.REJECTED: set(),
    S.CANCELED: set(),
    S.EXPIRED: set(),
    S.SUPERSEDED: set(),
    S.EXECUTED: set(),
}

#: The command that targets each status (nothing targets ``created``).
COMMAND_FOR_TARGET: dict[Status, str] = {
    S.PENDING: "move_to_pending",
    S.APPROVED: "approve",
    S.REJECTED: "reject",
    S.CANCELED: "cancel",
    S.EXPIRED: "expire",
    S.SUPERSEDED: "supersede",
    S.EXECUTED: "mark_executed",
}

ALLOWED_PAIRS = [
    pytest.param(source, target, id=f"{source}->{target}")
    for source in Status
    for target in COMMAND_FOR_TARGET
    if target in CONTRACT_TABLE[source]
]
REFUSED_PAIRS = [
    pytest.param(source, target, id=f"{source}->{target}")
    for source in Status
    for target in COMMAND_FOR_TARGET
    if target not in CONTRACT_TABLE[source]
]


def issue_targeting(request: MutationRequest, target: Status) -> Outcome:
    """The command targeting ``target`` against ``request``; a supersede names a live request,
    so that only the table decides."""
    superseding = superseding_request() if target is S.SUPERSEDED else None
    return issue(request, COMMAND_FOR_TARGET[target], superseding=superseding)


def test_every_pair_of_statuses_is_covered_once() -> None:
    assert len(ALLOWED_PAIRS) + len(REFUSED_PAIRS) == 8 * 7
    assert len(ALLOWED_PAIRS) == 14


def test_the_lifecycle_table_is_the_contract_table() -> None:
    assert {source: set(targets) for source, targets in ALLOWED_TRANSITIONS.items()} == (
        CONTRACT_TABLE
    )


def test_the_terminal_statuses_are_those_without_successors() -> None:
    assert {S.REJECTED, S.CANCELED, S.EXPIRED, S.SUPERSEDED, S.EXECUTED} == TERMINAL_STATUSES
    assert [status for status in Status if is_terminal(status)] == sorted(
        TERMINAL_STATUSES, key=list(Status).index
    )


@pytest.mark.parametrize("source", list(Status), ids=str)
def test_no_status_may_move_to_itself_or_back_to_created(source: Status) -> None:
    assert not can_transition(source, source)
    assert not can_transition(source, S.CREATED)


def test_every_status_but_created_has_exactly_one_command_targeting_it() -> None:
    assert set(COMMAND_FOR_TARGET) == set(Status) - {S.CREATED}
    assert len(set(COMMAND_FOR_TARGET.values())) == len(COMMAND_FOR_TARGET)


@pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS)
def test_an_allowed_transition_is_applied(source: Status, target: Status) -> None:
    # Given a request in the source status at revision 3
    request = request_in_status(source, revision=3)

    # When the command targeting the target status is issued at revision 3
    outcome = applied(issue_targeting(request, target))

    # Then the request moved one revision on, recording one lifecycle decision
    assert outcome.from_status is source
    assert outcome.request.status is target
    assert outcome.request.revision == 4
    assert outcome.request.updated_at == NOW
    assert [(d.category, d.type) for d in outcome.decisions] == [
        (DecisionCategory.LIFECYCLE, target.value)
    ]
    assert outcome.request.decisions == request.decisions + outcome.decisions


@pytest.mark.parametrize(("source", "target"), REFUSED_PAIRS)
def test_a_refused_transition_is_rejected_as_invalid_transition(
    source: Status, target: Status
) -> None:
    # Given a request in the source status at revision 3
    request = request_in_status(source, revision=3)

    # When the command targeting a status the table does not allow is issued
    rejection = rejected(issue_targeting(request, target))

    # Then it is refused, reporting where the request stands
    assert rejection.code is RejectionCode.INVALID_TRANSITION
    assert rejection.expected_revision == 3
    assert rejection.current_revision == 3
    assert rejection.current_status is source
    assert f"from {source.value} to {target.value}" in rejection.message


@pytest.mark.parametrize("target", sorted(CONTRACT_TABLE[S.PENDING]), ids=str)
def test_leaving_pending_clears_pending_reason_and_expiry(target: Status) -> None:
    # Given a request pending for manual review until LATER
    request = request_in_status(S.PENDING, pending_reason=PendingReason.MANUAL_REVIEW)
    assert request.expires_at == LATER

    # When it leaves pending
    outcome = applied(issue_targeting(request, target))

    # Then it no longer has a pending reason or an expiry
    assert outcome.request.pending_reason is None
    assert outcome.request.expires_at is None


@pytest.mark.parametrize("source", [S.CREATED, S.APPROVED], ids=str)
def test_moving_to_pending_records_the_reason_and_expiry(source: Status) -> None:
    # Given a request that is not pending
    request = request_in_status(source)

    # When it is moved to pending for a schedule until LATER
    outcome = applied(
        issue(request, "move_to_pending", pending_reason="schedule", expires_at="2026-11-28T15:00Z")
    )

    # Then it is pending with that reason and expiry
    assert outcome.request.status is S.PENDING
    assert outcome.request.pending_reason is PendingReason.SCHEDULE
    assert outcome.request.expires_at == LATER


def test_moving_to_pending_without_an_expiry_leaves_none() -> None:
    outcome = applied(
        issue(request_in_status(S.APPROVED), "move_to_pending", pending_reason="quota")
    )

    assert outcome.request.pending_reason is PendingReason.QUOTA
    assert outcome.request.expires_at is None
