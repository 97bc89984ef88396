"""The multi-step approval workflow (DESIGN.md §2), as the origin's scenarios.

Every scenario starts from a request submitted with three requirements over two steps:
alice decides step 1, bob and carol decide step 2.
"""

from __future__ import annotations

from typing import Any

import pytest

from governance.model import ApprovalStatus, MutationRequest, PendingReason, Status
from governance.rules import Rejection, RejectionCode

from .builders import (
    NOW,
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


def three_approvals() -> MutationRequest:
    return submitted(submit_payload(approval_requirements=THREE_APPROVERS))


def grant(request: MutationRequest, approval_id: str, approver: str) -> MutationRequest:
    return applied(
        issue(request, "approve_requirement", actor_id=approver, approval_id=approval_id)
    ).request


def status_of(request: MutationRequest, approval_id: str) -> ApprovalStatus:
    return next(r.status for r in request.approval_requirements if r.approval_id == approval_id)


def assert_refused(rejection: Rejection, request: MutationRequest, fragment: str) -> None:
    assert rejection.code is RejectionCode.APPROVAL_NOT_ALLOWED
    assert rejection.current_revision == request.revision
    assert rejection.current_status is request.status
    assert fragment in rejection.message


def test_a_request_with_requirements_waits_for_approval_with_every_requirement_pending() -> None:
    # Given / When a request is submitted with three requirements
    request = three_approvals()

    # Then it is pending approval and nothing has been decided
    assert request.status is Status.PENDING
    assert request.pending_reason is PendingReason.APPROVAL
    assert [(r.approval_id, r.step_order, r.status) for r in request.approval_requirements] == [
        ("alice-1", 1, ApprovalStatus.PENDING),
        ("bob-2", 2, ApprovalStatus.PENDING),
        ("carol-2", 2, ApprovalStatus.PENDING),
    ]


def test_the_first_step_grant_records_the_decision_and_keeps_the_request_pending() -> None:
    # Given the request waiting for alice's step-1 approval
    request = three_approvals()

    # When alice grants her requirement with a reason
    outcome = applied(
        issue(request, "approve_requirement", actor_id="alice", approval_id="alice-1")
    )

    # Then the requirement is approved by alice now, and the request still waits
    decided = outcome.request.approval_requirements[0]
    assert (decided.status, decided.decided_by, decided.decided_at) == (
        ApprovalStatus.APPROVED,
        "alice",
        NOW,
    )
    assert outcome.request.status is Status.PENDING
    assert outcome.request.pending_reason is PendingReason.APPROVAL
    assert outcome.request.revision == request.revision + 1
    assert kinds(outcome.decisions) == ["approval.granted"]
    assert outcome.decisions[0].metadata == {"approval_id": "alice-1", "step_order": 1}


def test_a_second_step_approver_deciding_before_the_first_step_is_refused() -> None:
    # Given the request waiting for alice's step-1 approval
    request = three_approvals()

    # When bob decides his step-2 requirement first
    rejection = rejected(issue(request, "approve_requirement", actor_id="bob", approval_id="bob-2"))

    # Then he is refused: step 1 is still open
    assert_refused(rejection, request, "step 1 is still open")


def test_an_actor_who_is_not_the_named_approver_is_refused() -> None:
    # Given the request waiting for alice's step-1 approval
    request = three_approvals()

    # When mallory tries to grant alice's requirement
    rejection = rejected(
        issue(request, "approve_requirement", actor_id="mallory", approval_id="alice-1")
    )

    # Then she is refused and alice's requirement is still pending
    assert_refused(rejection, request, "is for alice, not mallory")
    assert status_of(request, "alice-1") is ApprovalStatus.PENDING


def test_an_approver_cannot_decide_another_approvers_requirement() -> None:
    # Given step 1 granted, so step 2 is open
    request = grant(three_approvals(), "alice-1", "alice")

    # When bob tries to reject carol's requirement
    rejection = rejected(
        issue(request, "reject_requirement", actor_id="bob", approval_id="carol-2")
    )

    # Then he is refused
    assert_refused(rejection, request, "is for carol, not bob")


@pytest.mark.parametrize("second_verdict", ["approve_requirement", "reject_requirement"])
def test_a_requirement_already_decided_cannot_be_decided_again(second_verdict: str) -> None:
    # Given alice has granted her requirement
    request = grant(three_approvals(), "alice-1", "alice")

    # When she decides it again
    rejection = rejected(issue(request, second_verdict, actor_id="alice", approval_id="alice-1"))

    # Then she is refused
    assert_refused(rejection, request, "already decided (approved)")


def test_a_nonexistent_approval_id_is_refused() -> None:
    # Given the request waiting for approval
    request = three_approvals()

    # When alice decides a requirement the request does not have
    rejection = rejected(
        issue(request, "approve_requirement", actor_id="alice", approval_id="dave-9")
    )

    # Then she is refused
    assert_refused(rejection, request, "no approval requirement dave-9")


NOT_PENDING_APPROVAL: list[Any] = [
    *(
        pytest.param(status, None, id=str(status))
        for status in Status
        if status is not Status.PENDING
    ),
    pytest.param(Status.PENDING, PendingReason.EXTERNAL_CHECK, id="pending-external_check"),
]


@pytest.mark.parametrize("verdict", ["approve_requirement", "reject_requirement"])
@pytest.mark.parametrize(("status", "reason"), NOT_PENDING_APPROVAL)
def test_requirement_commands_on_a_request_not_pending_approval_are_refused(
    verdict: str, status: Status, reason: PendingReason | None
) -> None:
    # Given a request with alice's requirement that is not pending approval
    request = request_in_status(
        status, pending_reason=reason, requirements=(requirement("alice-1", "alice"),)
    )

    # When alice decides her requirement
    rejection = rejected(issue(request, verdict, actor_id="alice", approval_id="alice-1"))

    # Then she is refused, and told where the request stands
    assert_refused(rejection, request, f"request is {status.value}")
    assert rejection.message.endswith("not pending approval")


def test_second_step_approvers_may_decide_in_either_order() -> None:
    # Given step 1 granted
    request = grant(three_approvals(), "alice-1", "alice")

    # When carol grants before bob
    request = grant(request, "carol-2", "carol")

    # Then the request still waits for bob
    assert request.status is Status.PENDING
    assert status_of(request, "bob-2") is ApprovalStatus.PENDING


def test_the_final_grant_approves_the_request() -> None:
    # Given alice and carol have granted
    request = grant(grant(three_approvals(), "alice-1", "alice"), "carol-2", "carol")

    # When bob grants the last requirement
    outcome = applied(issue(request, "approve_requirement", actor_id="bob", approval_id="bob-2"))

    # Then the request is approved, recording the grant then the lifecycle move
    assert outcome.from_status is Status.PENDING
    assert outcome.request.status is Status.APPROVED
    assert kinds(outcome.decisions) == ["approval.granted", "lifecycle.approved"]
    assert all(r.status is ApprovalStatus.APPROVED for r in outcome.request.approval_requirements)
    assert outcome.request.pending_reason is None
    assert outcome.request.revision == request.revision + 1


@pytest.mark.parametrize(
    ("granted_first", "rejecting_approver", "approval_id"),
    [
        pytest.param([], "alice", "alice-1", id="rejected-in-step-1"),
        pytest.param([("alice-1", "alice")], "bob", "bob-2", id="rejected-in-step-2"),
    ],
)
def test_one_rejection_rejects_the_request(
    granted_first: list[tuple[str, str]], rejecting_approver: str, approval_id: str
) -> None:
    # Given the request with some requirements already granted
    request = three_approvals()
    for granted_id, approver in granted_first:
        request = grant(request, granted_id, approver)

    # When one approver rejects their requirement
    outcome = applied(
        issue(request, "reject_requirement", actor_id=rejecting_approver, approval_id=approval_id)
    )

    # Then the whole request is rejected, recording the refusal then the lifecycle move
    assert outcome.request.status is Status.REJECTED
    assert kinds(outcome.decisions) == ["approval.rejected", "lifecycle.rejected"]
    assert status_of(outcome.request, approval_id) is ApprovalStatus.REJECTED
    assert outcome.request.pending_reason is None


def test_the_rejecting_approver_and_reason_are_recorded_on_the_requirement() -> None:
    # Given the request waiting for alice
    request = three_approvals()

    # When alice rejects, saying why
    outcome = applied(
        issue(
            request,
            "reject_requirement",
            actor_id="alice",
            reason="too risky",
            approval_id="alice-1",
        )
    )

    # Then the requirement carries who, when and why, and so does the decision
    decided = outcome.request.approval_requirements[0]
    assert (decided.decided_by, decided.decided_at, decided.reason) == ("alice", NOW, "too risky")
    assert outcome.decisions[0].reason == "too risky"
    assert outcome.decisions[0].actor.id == "alice"
