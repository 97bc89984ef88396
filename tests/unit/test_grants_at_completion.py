"""A group requirement completes only on grants that still stand: when the grant that would
complete it arrives, the grants before it are re-checked (the worker and ``verify`` say which
no longer stand, and why), the void ones are recorded and not counted."""

from __future__ import annotations

from governance.model import ApprovalStatus, Grant, Status

from .builders import NOW, applied, issue, kinds
from .test_approval_workflow import cab_request, grant, the_requirement

LEFT = "alice is no longer a member of group cab"


def test_a_completing_grant_counts_every_earlier_grant_that_still_stands() -> None:
    # Given alice granted a two-member cab requirement
    request = grant(cab_request(), "cab-1", "alice")

    # When bob's grant completes it and nothing is void
    outcome = applied(issue(request, "approve_requirement", actor_id="bob", approval_id="cab-1"))

    # Then the request is approved on both grants
    assert outcome.request.status is Status.APPROVED
    assert kinds(outcome.decisions) == ["approval.granted", "lifecycle.approved"]


def test_a_void_grant_is_recorded_and_not_counted() -> None:
    # Given alice granted a two-member cab requirement, and has since left the group
    request = grant(cab_request(), "cab-1", "alice")

    # When bob's grant would complete it
    outcome = applied(
        issue(
            request,
            "approve_requirement",
            actor_id="bob",
            approval_id="cab-1",
            void_grants={("cab-1", "alice"): LEFT},
        )
    )

    # Then alice's grant is recorded as void, with why, and only bob's counts
    assert kinds(outcome.decisions) == ["approval.grant_voided", "approval.granted"]
    voided = outcome.decisions[0]
    assert (voided.metadata["voided_actor_id"], voided.metadata["why"]) == ("alice", LEFT)
    assert voided.actor.id == "bob"
    decided = the_requirement(outcome.request)
    assert decided.grants == (Grant("bob", NOW, None),)
    assert decided.status is ApprovalStatus.PENDING
    assert outcome.request.status is Status.PENDING


def test_a_void_grant_is_only_judged_when_the_requirement_would_complete() -> None:
    # Given a requirement of three: alice granted, then left the group
    request = grant(cab_request(min_approvals=3), "cab-1", "alice")

    # When bob's grant is the second of three
    outcome = applied(
        issue(
            request,
            "approve_requirement",
            actor_id="bob",
            approval_id="cab-1",
            void_grants={("cab-1", "alice"): LEFT},
        )
    )

    # Then nothing is voided yet: the grants are judged at completion
    assert kinds(outcome.decisions) == ["approval.granted"]
    assert [g.actor_id for g in the_requirement(outcome.request).grants] == ["alice", "bob"]


def test_after_a_voided_grant_another_standing_grant_completes_the_requirement() -> None:
    # Given alice's grant was voided when bob granted
    request = applied(
        issue(
            grant(cab_request(), "cab-1", "alice"),
            "approve_requirement",
            actor_id="bob",
            approval_id="cab-1",
            void_grants={("cab-1", "alice"): LEFT},
        )
    ).request

    # When carol grants
    outcome = applied(issue(request, "approve_requirement", actor_id="carol", approval_id="cab-1"))

    # Then bob's and carol's grants approve the request
    assert [g.actor_id for g in the_requirement(outcome.request).grants] == ["bob", "carol"]
    assert outcome.request.status is Status.APPROVED
