"""The multi-step approval workflow, as the origin's scenarios, then group (M-of-N)
requirements and separation of duties.

The named scenarios start from a request submitted with three requirements over two steps:
alice decides step 1, bob and carol decide step 2. The group scenarios start from one
requirement that two members of the ``cab`` group (alice, bob, carol) must grant. The
submitter is ``operator`` unless a scenario says otherwise; each actor's groups are those
of ``builders.GROUPS``.
"""

from __future__ import annotations

from typing import Any

import pytest

from governance.codec import request_to_dict
from governance.commands import parse_command
from governance.model import (
    ApprovalRequirement,
    ApprovalStatus,
    Grant,
    MutationRequest,
    PendingReason,
    Status,
)
from governance.rules import Rejection, RejectionCode, decide

from .builders import (
    CAB,
    NOW,
    THREE_APPROVERS,
    actor_payload,
    applied,
    command,
    command_payload,
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


@pytest.mark.parametrize(
    "actor",
    [
        pytest.param(actor_payload("alice"), id="the-open-step-approver"),
        pytest.param(actor_payload("carol"), id="a-later-step-approver"),
        pytest.param(actor_payload("operator"), id="an-operator"),
        pytest.param(actor_payload("root", "administrator"), id="an-administrator"),
    ],
)
def test_approve_while_requirements_are_pending_is_refused_whoever_sends_it(
    actor: dict[str, Any],
) -> None:
    # Given the request waiting for its three approvals
    request = three_approvals()

    # When anyone approves it by hand
    payload = command_payload("approve", expected_revision=request.revision)
    rejection = rejected(decide(request, parse_command({**payload, "actor": actor}), NOW))

    # Then they are refused: the requirements are decided one by one
    assert_refused(rejection, request, "3 approval requirements are still pending")
    assert "approve_requirement" in rejection.message


def test_approve_after_some_grants_names_how_many_requirements_are_still_pending() -> None:
    # Given alice and carol have granted, so only bob's requirement is pending
    request = grant(grant(three_approvals(), "alice-1", "alice"), "carol-2", "carol")

    # When the request is approved by hand
    rejection = rejected(issue(request, "approve"))

    # Then it is refused, naming the one requirement left
    assert_refused(rejection, request, "1 approval requirement is still pending")


def test_approve_on_a_request_whose_requirements_are_all_decided_follows_the_table() -> None:
    # Given a request approved through its requirements, then held for manual review
    request = three_approvals()
    for approval_id, approver in [("alice-1", "alice"), ("bob-2", "bob"), ("carol-2", "carol")]:
        request = grant(request, approval_id, approver)
    request = applied(issue(request, "move_to_pending", pending_reason="manual_review")).request

    # When the review is done and it is approved by hand
    outcome = applied(issue(request, "approve"))

    # Then it is approved again
    assert outcome.request.status is Status.APPROVED
    assert kinds(outcome.decisions) == ["lifecycle.approved"]


def test_approve_on_a_request_without_requirements_follows_the_table() -> None:
    outcome = applied(issue(request_in_status(Status.PENDING), "approve"))

    assert outcome.request.status is Status.APPROVED


def test_approve_on_an_ended_request_with_pending_requirements_is_an_invalid_transition() -> None:
    # Given a request canceled while its approvals were pending
    request = applied(issue(three_approvals(), "cancel")).request
    assert request.approval_requirements[0].status is ApprovalStatus.PENDING

    # When it is approved by hand
    rejection = rejected(issue(request, "approve"))

    # Then the table refuses it: no decision on a requirement could make it possible
    assert rejection.code is RejectionCode.INVALID_TRANSITION
    assert rejection.message == "cannot move from canceled to approved"


# --------------------------------------------------------------------------- groups (M of N)


def cab_request(min_approvals: int = 2, **submit: Any) -> MutationRequest:
    """A request waiting for ``min_approvals`` members of the cab group."""
    return submitted(
        submit_payload(
            approval_requirements=[
                {"approval_id": "cab-1", "approver_group": CAB, "min_approvals": min_approvals}
            ],
            **submit,
        )
    )


def the_requirement(request: MutationRequest, approval_id: str = "cab-1") -> ApprovalRequirement:
    return next(r for r in request.approval_requirements if r.approval_id == approval_id)


def test_a_group_requirement_is_submitted_pending_with_no_grants() -> None:
    request = cab_request()

    decided = the_requirement(request)
    assert (decided.approver_id, decided.approver_group, decided.min_approvals) == (None, CAB, 2)
    assert (decided.status, decided.grants) == (ApprovalStatus.PENDING, ())
    assert request.status is Status.PENDING


def test_the_first_grant_of_two_is_recorded_and_the_requirement_stays_pending() -> None:
    # Given a request waiting for two cab members
    request = cab_request()

    # When alice, a member, grants it with a reason
    outcome = applied(
        issue(request, "approve_requirement", actor_id="alice", reason="fine", approval_id="cab-1")
    )

    # Then her grant is kept, the requirement and the request still wait
    decided = the_requirement(outcome.request)
    assert decided.grants == (Grant("alice", NOW, "fine"),)
    assert (decided.status, decided.decided_by, decided.decided_at) == (
        ApprovalStatus.PENDING,
        None,
        None,
    )
    assert outcome.request.status is Status.PENDING
    assert outcome.request.pending_reason is PendingReason.APPROVAL
    # And the grant is its own decision, by alice, saying how far the requirement has come
    assert kinds(outcome.decisions) == ["approval.granted"]
    assert outcome.decisions[0].actor.id == "alice"
    assert outcome.decisions[0].metadata == {
        "approval_id": "cab-1",
        "step_order": 1,
        "grants_so_far": 1,
        "min_approvals": 2,
    }


def test_the_second_distinct_member_completes_a_two_of_three_group_and_approves() -> None:
    # Given alice has granted the 2-of-3 cab requirement
    request = grant(cab_request(), "cab-1", "alice")

    # When bob, another member, grants it
    outcome = applied(issue(request, "approve_requirement", actor_id="bob", approval_id="cab-1"))

    # Then the requirement is approved, settled by bob's grant, and so is the request
    decided = the_requirement(outcome.request)
    assert [g.actor_id for g in decided.grants] == ["alice", "bob"]
    assert (decided.status, decided.decided_by, decided.decided_at) == (
        ApprovalStatus.APPROVED,
        "bob",
        NOW,
    )
    assert outcome.request.status is Status.APPROVED
    assert kinds(outcome.decisions) == ["approval.granted", "lifecycle.approved"]
    assert outcome.decisions[0].metadata["grants_so_far"] == 2
    assert [d.actor.id for d in outcome.decisions] == ["bob", "bob"]


def test_a_one_of_n_group_requirement_is_approved_by_its_first_grant() -> None:
    outcome = applied(
        issue(
            cab_request(min_approvals=1),
            "approve_requirement",
            actor_id="carol",
            approval_id="cab-1",
        )
    )

    assert the_requirement(outcome.request).status is ApprovalStatus.APPROVED
    assert outcome.request.status is Status.APPROVED


@pytest.mark.parametrize("verdict", ["approve_requirement", "reject_requirement"])
def test_the_same_member_cannot_decide_a_group_requirement_twice(verdict: str) -> None:
    # Given alice has granted the cab requirement
    request = grant(cab_request(), "cab-1", "alice")

    # When she decides it again
    rejection = rejected(issue(request, verdict, actor_id="alice", approval_id="cab-1"))

    # Then she is refused: each grant is a distinct member's
    assert_refused(rejection, request, "alice already granted approval cab-1")


@pytest.mark.parametrize("verdict", ["approve_requirement", "reject_requirement"])
def test_a_submitter_who_is_a_member_of_the_group_cannot_decide(verdict: str) -> None:
    # Given a request alice submitted for the cab group she is a member of
    request = cab_request(actor_id="alice")

    # When she decides its requirement
    rejection = rejected(issue(request, verdict, actor_id="alice", approval_id="cab-1"))

    # Then she is refused: the submitter decides none of its requirements
    assert_refused(rejection, request, "alice submitted the request")
    assert "may not decide any of its approval requirements" in rejection.message


@pytest.mark.parametrize(
    ("actor_id", "groups"),
    [
        pytest.param("dave", frozenset({"ops"}), id="a-member-of-another-group"),
        pytest.param("mallory", frozenset(), id="an-actor-in-no-group"),
    ],
)
@pytest.mark.parametrize("verdict", ["approve_requirement", "reject_requirement"])
def test_a_non_member_cannot_decide_a_group_requirement(
    verdict: str, actor_id: str, groups: frozenset[str]
) -> None:
    request = cab_request()

    rejection = rejected(
        issue(request, verdict, actor_id=actor_id, groups=groups, approval_id="cab-1")
    )

    assert_refused(rejection, request, f"approval cab-1 is for a member of group cab; {actor_id}")


def test_group_membership_comes_from_the_groups_given_to_decide() -> None:
    # Given a request waiting for the cab group, and a command from dave
    request = cab_request(min_approvals=1)
    cmd = command("approve_requirement", request.revision, actor_id="dave", approval_id="cab-1")

    # When dave is not in cab, and then when the registry says he is
    refused = decide(request, cmd, NOW)
    granted = decide(request, cmd, NOW, groups=frozenset({CAB}))

    # Then only the second is applied: the command's word is not what makes him a member
    assert rejected(refused).code is RejectionCode.APPROVAL_NOT_ALLOWED
    assert applied(granted).request.status is Status.APPROVED


def test_a_members_rejection_rejects_the_group_requirement_and_the_request() -> None:
    # Given alice has granted the cab requirement
    request = grant(cab_request(), "cab-1", "alice")

    # When bob, a member, rejects it
    outcome = applied(
        issue(request, "reject_requirement", actor_id="bob", reason="no", approval_id="cab-1")
    )

    # Then the requirement and the request are rejected, by bob, alice's grant still shown
    decided = the_requirement(outcome.request)
    assert (decided.status, decided.decided_by, decided.reason) == (
        ApprovalStatus.REJECTED,
        "bob",
        "no",
    )
    assert [g.actor_id for g in decided.grants] == ["alice"]
    assert outcome.request.status is Status.REJECTED
    assert kinds(outcome.decisions) == ["approval.rejected", "lifecycle.rejected"]
    assert outcome.decisions[0].metadata == {"approval_id": "cab-1", "step_order": 1}


def test_a_group_requirement_shows_its_grants() -> None:
    # Given alice has granted the cab requirement
    request = grant(cab_request(), "cab-1", "alice")

    # When the request is shown
    shown = request_to_dict(request)["approval_requirements"][0]

    # Then the requirement shows the group, what it needs and who granted it
    assert shown["approver_group"] == CAB
    assert shown["min_approvals"] == 2
    assert shown["grants"] == [
        {"actor_id": "alice", "decided_at": "2026-11-28T14:00:00Z", "reason": None}
    ]


def renew(request: MutationRequest) -> MutationRequest:
    """The request after its state moved on and renewed approval was required."""
    return applied(
        issue(
            request,
            "resolve_version",
            current_state_version="v2",
            strategy="require_renewed_approval",
        )
    ).request


def test_a_renewed_approval_clears_the_grants_and_earlier_members_may_grant_again() -> None:
    # Given alice has granted the cab requirement of a request made against v1
    request = grant(cab_request(expected_state_version="v1"), "cab-1", "alice")

    # When the state is at v2 and renewed approval is required
    request = renew(request)

    # Then the requirement is pending with no grants
    assert (the_requirement(request).status, the_requirement(request).grants) == (
        ApprovalStatus.PENDING,
        (),
    )
    # And alice may grant it again, then bob completes it
    request = grant(grant(request, "cab-1", "alice"), "cab-1", "bob")
    assert [g.actor_id for g in the_requirement(request).grants] == ["alice", "bob"]
    assert request.status is Status.APPROVED


def test_a_renewed_approval_lets_an_approver_decide_another_requirement_than_before() -> None:
    # Given alice granted her named requirement on v1, so she may not grant cab's
    request = submitted(
        submit_payload(
            expected_state_version="v1",
            approval_requirements=[
                {"approval_id": "alice-1", "approver_id": "alice"},
                {"approval_id": "cab-2", "approver_group": CAB, "step_order": 2},
            ],
        )
    )
    request = grant(request, "alice-1", "alice")
    refused = rejected(issue(request, "approve_requirement", actor_id="alice", approval_id="cab-2"))
    assert_refused(refused, request, "alice already granted approval alice-1")

    # When renewed approval is required, and alice grants her own again and bob cab's
    request = grant(grant(renew(request), "alice-1", "alice"), "cab-2", "bob")

    # Then the request is approved through them
    assert request.status is Status.APPROVED


# --------------------------------------------------------------------------- separation of duties


def test_one_actor_decides_at_most_one_of_two_requirements_naming_them() -> None:
    # Given a request with two requirements that both name alice, and she granted the first
    request = submitted(
        submit_payload(
            approval_requirements=[
                {"approval_id": "a-1", "approver_id": "alice"},
                {"approval_id": "a-2", "approver_id": "alice", "step_order": 2},
            ]
        )
    )
    request = grant(request, "a-1", "alice")

    # When she decides the second, approving or rejecting
    for verdict in ("approve_requirement", "reject_requirement"):
        rejection = rejected(issue(request, verdict, actor_id="alice", approval_id="a-2"))

        # Then she is refused: distinct approvers
        assert_refused(rejection, request, "alice already granted approval a-1")
        assert "one actor decides at most one requirement of a request, so not a-2" in (
            rejection.message
        )


def test_a_named_approver_who_granted_cannot_also_grant_a_group_requirement() -> None:
    # Given alice granted her named requirement of step 1; step 2 is for the cab group
    request = submitted(
        submit_payload(
            approval_requirements=[
                {"approval_id": "alice-1", "approver_id": "alice"},
                {"approval_id": "cab-2", "approver_group": CAB, "step_order": 2},
            ]
        )
    )
    request = grant(request, "alice-1", "alice")

    # When alice, a cab member, grants the group requirement too
    rejection = rejected(
        issue(request, "approve_requirement", actor_id="alice", approval_id="cab-2")
    )

    # Then she is refused, and another member may grant it
    assert_refused(rejection, request, "alice already granted approval alice-1")
    assert grant(request, "cab-2", "carol").status is Status.APPROVED


def test_a_member_who_granted_one_group_requirement_cannot_grant_another() -> None:
    # Given two cab requirements in one step, and bob granted the first
    request = submitted(
        submit_payload(
            approval_requirements=[
                {"approval_id": "cab-1", "approver_group": CAB, "min_approvals": 2},
                {"approval_id": "cab-2", "approver_group": CAB},
            ]
        )
    )
    request = grant(request, "cab-1", "bob")

    # When he grants the second
    rejection = rejected(issue(request, "approve_requirement", actor_id="bob", approval_id="cab-2"))

    # Then he is refused, though the first is not complete yet
    assert_refused(rejection, request, "bob already granted approval cab-1")


def test_a_submit_naming_its_submitter_as_an_approver_is_accepted() -> None:
    request = submitted(
        submit_payload(
            actor_id="alice", approval_requirements=[{"approval_id": "a-1", "approver_id": "alice"}]
        )
    )

    assert request.status is Status.PENDING
    assert request.approval_requirements[0].approver_id == "alice"


@pytest.mark.parametrize("verdict", ["approve_requirement", "reject_requirement"])
@pytest.mark.parametrize("actor_id", ["alice", "bob"], ids=["the-submitter", "anyone-else"])
def test_a_requirement_naming_the_submitter_can_never_be_decided_and_says_so(
    verdict: str, actor_id: str
) -> None:
    # Given a request alice submitted with a requirement that names her
    request = submitted(
        submit_payload(
            actor_id="alice", approval_requirements=[{"approval_id": "a-1", "approver_id": "alice"}]
        )
    )

    # When she, or anyone else, decides it
    rejection = rejected(issue(request, verdict, actor_id=actor_id, approval_id="a-1"))

    # Then they are refused, and told it can only be granted by someone else: never
    assert_refused(
        rejection,
        request,
        "approval a-1 names the submitter alice as its approver, so it can only be granted by "
        "someone else, which for a named approver means never",
    )


def test_the_submitter_cannot_decide_a_requirement_naming_another_approver() -> None:
    # Given a request bob submitted, naming alice and carol as approvers
    request = submitted(
        submit_payload(
            actor_id="bob",
            approval_requirements=[
                {"approval_id": "a-1", "approver_id": "alice"},
                {"approval_id": "c-1", "approver_id": "carol"},
            ],
        )
    )

    # When bob decides carol's
    rejection = rejected(issue(request, "approve_requirement", actor_id="bob", approval_id="c-1"))

    # Then he is refused as the submitter, with no word of "never": carol still can
    assert_refused(rejection, request, "bob submitted the request")
    assert "never" not in rejection.message
    assert grant(request, "c-1", "carol").status is Status.PENDING
