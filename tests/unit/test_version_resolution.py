"""Version-aware resolution (``resolve_version``), one strategy at a time."""

from __future__ import annotations

import pytest

from governance.lifecycle import TERMINAL_STATUSES
from governance.model import ApprovalStatus, MutationRequest, PendingReason, Status
from governance.rules import Outcome, RejectionCode

from .builders import (
    LATER,
    THREE_APPROVERS,
    applied,
    issue,
    kinds,
    rejected,
    request_in_status,
    requirement,
    submit_payload,
    submitted,
)

STRATEGIES = ["reject_stale", "require_renewed_approval", "revalidate_on_latest_state"]
LIVE_STATUSES = [Status.CREATED, Status.PENDING, Status.APPROVED]


def resolve(request: MutationRequest, current_version: str, strategy: str) -> Outcome:
    return issue(
        request, "resolve_version", current_state_version=current_version, strategy=strategy
    )


def approved_after_three_approvals() -> MutationRequest:
    """A request made against version v1 whose three approvals were all granted."""
    request = submitted(
        submit_payload(approval_requirements=THREE_APPROVERS, expected_state_version="v1")
    )
    for approval_id, approver in [("alice-1", "alice"), ("bob-2", "bob"), ("carol-2", "carol")]:
        request = applied(
            issue(request, "approve_requirement", actor_id=approver, approval_id=approval_id)
        ).request
    assert request.status is Status.APPROVED
    return request


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("status", LIVE_STATUSES, ids=str)
def test_without_an_expected_version_the_request_is_validated(
    status: Status, strategy: str
) -> None:
    # Given a request made against no particular version
    request = request_in_status(status, expected_state_version=None)

    # When its version is resolved against v2
    outcome = applied(resolve(request, "v2", strategy))

    # Then it is validated: status unchanged, one revision on
    assert kinds(outcome.decisions) == ["version_resolution.validated"]
    assert outcome.request.status is status
    assert outcome.request.revision == request.revision + 1
    assert outcome.request.expected_state_version is None


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("status", LIVE_STATUSES, ids=str)
def test_with_the_current_version_the_request_is_validated(status: Status, strategy: str) -> None:
    request = request_in_status(status, expected_state_version="v2")

    outcome = applied(resolve(request, "v2", strategy))

    assert kinds(outcome.decisions) == ["version_resolution.validated"]
    assert outcome.request.status is status
    assert outcome.request.revision == request.revision + 1


def test_validation_keeps_a_pending_request_waiting_as_it_was() -> None:
    request = request_in_status(Status.PENDING, pending_reason=PendingReason.DEPENDENCY)

    outcome = applied(resolve(request, "v2", "reject_stale"))

    assert outcome.request.pending_reason is PendingReason.DEPENDENCY
    assert outcome.request.expires_at == LATER


def test_a_resolution_decision_records_both_versions_and_the_strategy() -> None:
    request = request_in_status(Status.APPROVED, expected_state_version="v1")

    outcome = applied(resolve(request, "v2", "revalidate_on_latest_state"))

    assert outcome.decisions[0].metadata == {
        "expected_state_version": "v1",
        "current_state_version": "v2",
        "strategy": "revalidate_on_latest_state",
    }


@pytest.mark.parametrize("status", [Status.PENDING, Status.APPROVED], ids=str)
def test_a_stale_request_under_reject_stale_is_rejected(status: Status) -> None:
    # Given a request made against v1
    request = request_in_status(status, expected_state_version="v1")

    # When the state is at v2 and stale requests are rejected
    outcome = applied(resolve(request, "v2", "reject_stale"))

    # Then it is rejected as stale
    assert outcome.request.status is Status.REJECTED
    assert kinds(outcome.decisions) == [
        "version_resolution.rejected_as_stale",
        "lifecycle.rejected",
    ]


def test_a_stale_created_request_cannot_be_rejected_because_the_table_forbids_it() -> None:
    # created -> rejected is not in the lifecycle table
    request = request_in_status(Status.CREATED, expected_state_version="v1")

    rejection = rejected(resolve(request, "v2", "reject_stale"))

    assert rejection.code is RejectionCode.INVALID_TRANSITION


def test_a_stale_approved_request_under_renewed_approval_waits_for_approval_again() -> None:
    # Given a request against v1 whose three approvals were all granted
    request = approved_after_three_approvals()

    # When the state is at v2 and renewed approval is required
    outcome = applied(resolve(request, "v2", "require_renewed_approval"))

    # Then it is pending approval against v2
    assert outcome.request.status is Status.PENDING
    assert outcome.request.pending_reason is PendingReason.APPROVAL
    assert outcome.request.expected_state_version == "v2"
    assert kinds(outcome.decisions) == [
        "version_resolution.renewed_approval_required",
        "lifecycle.pending",
    ]


def test_renewed_approval_resets_every_requirement_to_pending() -> None:
    # Given a request against v1 whose three approvals were all granted
    request = approved_after_three_approvals()

    # When the state is at v2 and renewed approval is required
    outcome = applied(resolve(request, "v2", "require_renewed_approval"))

    # Then every requirement waits again, with no trace of the spent decision
    assert [
        (r.status, r.decided_at, r.decided_by, r.reason)
        for r in outcome.request.approval_requirements
    ] == [(ApprovalStatus.PENDING, None, None, None)] * 3


def test_after_renewed_approval_the_approvals_can_be_granted_again_to_reach_approved() -> None:
    # Given a request sent back for renewed approval
    request = applied(
        resolve(approved_after_three_approvals(), "v2", "require_renewed_approval")
    ).request

    # When the three approvers grant again, step by step
    for approval_id, approver in [("alice-1", "alice"), ("carol-2", "carol"), ("bob-2", "bob")]:
        request = applied(
            issue(request, "approve_requirement", actor_id=approver, approval_id=approval_id)
        ).request

    # Then the request is approved against the current version
    assert request.status is Status.APPROVED
    assert request.expected_state_version == "v2"
    assert kinds(request.decisions[-2:]) == ["approval.granted", "lifecycle.approved"]


def test_after_renewed_approval_approve_is_refused_until_the_approvals_are_granted_again() -> None:
    # Given a request sent back for renewed approval, its three requirements pending again
    request = applied(
        resolve(approved_after_three_approvals(), "v2", "require_renewed_approval")
    ).request

    # When it is approved by hand instead
    rejection = rejected(issue(request, "approve"))

    # Then it is refused: the spent approvals must be granted again
    assert rejection.code is RejectionCode.APPROVAL_NOT_ALLOWED
    assert "3 approval requirements are still pending" in rejection.message


def test_renewed_approval_on_a_pending_request_resets_its_grants_without_a_lifecycle_move() -> None:
    # Given a request pending approval whose first step was granted, waiting until LATER
    request = request_in_status(
        Status.PENDING,
        pending_reason=PendingReason.APPROVAL,
        expected_state_version="v1",
        requirements=(
            requirement("alice-1", "alice", 1, ApprovalStatus.APPROVED),
            requirement("bob-2", "bob", 2),
        ),
    )

    # When renewed approval is required against v2
    outcome = applied(resolve(request, "v2", "require_renewed_approval"))

    # Then it stays pending approval, with alice's grant spent and no expiry
    assert kinds(outcome.decisions) == ["version_resolution.renewed_approval_required"]
    assert outcome.request.status is Status.PENDING
    assert outcome.request.pending_reason is PendingReason.APPROVAL
    assert outcome.request.expires_at is None
    assert [r.status for r in outcome.request.approval_requirements] == [ApprovalStatus.PENDING] * 2


def test_renewed_approval_makes_a_request_pending_for_another_reason_wait_for_approval() -> None:
    request = request_in_status(
        Status.PENDING, pending_reason=PendingReason.QUOTA, expected_state_version="v1"
    )

    outcome = applied(resolve(request, "v2", "require_renewed_approval"))

    assert outcome.request.pending_reason is PendingReason.APPROVAL


def test_a_stale_approved_request_under_revalidation_stays_approved_on_the_latest_version() -> None:
    # Given an approved request made against v1
    request = request_in_status(Status.APPROVED, expected_state_version="v1")

    # When the state is at v2 and it is revalidated on the latest state
    outcome = applied(resolve(request, "v2", "revalidate_on_latest_state"))

    # Then it stays approved, now against v2
    assert outcome.request.status is Status.APPROVED
    assert outcome.request.expected_state_version == "v2"
    assert outcome.request.revision == request.revision + 1
    assert kinds(outcome.decisions) == ["version_resolution.revalidation_required"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES), ids=str)
def test_resolving_the_version_of_a_terminal_request_is_an_invalid_transition(
    status: Status, strategy: str
) -> None:
    request = request_in_status(status, expected_state_version="v1")

    rejection = rejected(resolve(request, "v2", strategy))

    assert rejection.code is RejectionCode.INVALID_TRANSITION
    assert (rejection.current_revision, rejection.current_status) == (request.revision, status)
