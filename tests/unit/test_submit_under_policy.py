"""Submitting under the approval policy: the first matching rule's steps become the request's
requirements, the requester's follow, a request that needs approval starts pending for it,
``pending_for`` caps its expiry, and the request and its ``submitted`` decision name the
policy. Without a policy applied every submit is refused; in requester mode nothing changes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from governance.codec import request_to_dict
from governance.commands import parse_command
from governance.events import AppliedEvent, RejectedEvent, applied_event, rejected_event
from governance.model import (
    PendingReason,
    PolicyReference,
    RequirementSource,
    Status,
)
from governance.policy import (
    NO_POLICY_APPLIED,
    REQUESTER_MODE,
    ActivePolicy,
    PolicyMode,
    requirements_for,
)
from governance.rules import Outcome, RejectionCode, decide

from .builders import (
    LATER,
    NOW,
    POLICY,
    THREE_APPROVERS,
    applied,
    intent_payload,
    issue,
    kinds,
    rejected,
    submit_payload,
)

ACTIVE = ActivePolicy(version=7, policy=POLICY)
REFERENCE = {"version": 7, "sha256": POLICY.sha256, "rule_id": "critical-accounts"}
CRITICAL_ACCOUNT: dict[str, Any] = {"state_type": "account"}
DOCS: dict[str, Any] = {"intent": intent_payload(category="docs")}


def submit(
    policy: PolicyMode = ACTIVE, groups: frozenset[str] = frozenset(), **args: Any
) -> Outcome:
    return decide(None, parse_command(submit_payload(**args)), NOW, groups=groups, policy=policy)


# --------------------------------------------------------------------------- requirements


def test_the_matching_rules_steps_become_the_requests_requirements() -> None:
    request = applied(submit(**CRITICAL_ACCOUNT)).request

    assert request.approval_requirements == requirements_for(POLICY.rule("critical-accounts"))
    assert [(r.approval_id, r.source.value) for r in request.approval_requirements] == [
        ("policy-1", "policy"),
        ("policy-2", "policy"),
    ]


def test_a_submit_that_leaves_its_status_out_starts_pending_for_the_policys_approval() -> None:
    outcome = applied(submit(**CRITICAL_ACCOUNT))

    assert (outcome.request.status, outcome.request.pending_reason) == (
        Status.PENDING,
        PendingReason.APPROVAL,
    )
    assert kinds(outcome.decisions) == [
        "lifecycle.submitted",
        "lifecycle.pending",
        "approval.requested",
    ]
    assert outcome.decisions[2].metadata == {"approval_ids": ["policy-1", "policy-2"]}


def test_the_requesters_requirements_follow_as_further_steps() -> None:
    # Given a submit adding its own three requirements in two steps to the rule's two steps
    request = applied(submit(approval_requirements=THREE_APPROVERS, **CRITICAL_ACCOUNT)).request

    # Then they come after the policy's, their steps shifted past them, their ids as given
    assert [
        (r.approval_id, r.step_order, r.source.value) for r in request.approval_requirements
    ] == [
        ("policy-1", 1, "policy"),
        ("policy-2", 2, "policy"),
        ("alice-1", 3, "requester"),
        ("bob-2", 4, "requester"),
        ("carol-2", 4, "requester"),
    ]


def test_a_requester_requirement_without_an_id_gets_its_generated_one() -> None:
    request = applied(
        submit(approval_requirements=[{"approver_id": "alice"}], **CRITICAL_ACCOUNT)
    ).request

    assert request.approval_requirements[-1].approval_id == "approval-1"
    assert request.approval_requirements[-1].step_order == 3


def test_the_submitters_groups_choose_the_rule() -> None:
    contractor = applied(submit(groups=frozenset({"contractors", "ops"}))).request
    employee = applied(submit(groups=frozenset({"ops"}))).request

    assert [(r.approval_id, r.approver_group) for r in contractor.approval_requirements] == [
        ("policy-1", "leads")
    ]
    assert contractor.policy is not None and contractor.policy.rule_id == "contractors"
    assert employee.policy is not None and employee.policy.rule_id == "default"


# --------------------------------------------------------------------------- the policy named


def test_the_request_names_the_policy_version_its_sha256_and_the_rule() -> None:
    request = applied(submit(**CRITICAL_ACCOUNT)).request

    assert request.policy == PolicyReference(
        version=7, sha256=POLICY.sha256, rule_id="critical-accounts"
    )
    assert request_to_dict(request)["policy"] == REFERENCE


def test_the_submitted_decision_names_the_policy_too() -> None:
    submitted = applied(submit(**CRITICAL_ACCOUNT)).decisions[0]

    assert submitted.type == "submitted"
    assert submitted.metadata["policy"] == REFERENCE


def test_a_requester_cannot_name_another_policy_in_its_metadata() -> None:
    payload = submit_payload(**CRITICAL_ACCOUNT)
    payload["metadata"] = {"policy": {"version": 1, "sha256": "0" * 64, "rule_id": "docs"}}

    outcome = applied(decide(None, parse_command(payload), NOW, policy=ACTIVE))

    assert outcome.decisions[0].metadata["policy"] == REFERENCE


def test_the_applied_event_of_a_submit_under_a_policy_is_a_valid_event() -> None:
    command = parse_command(submit_payload(approval_requirements=THREE_APPROVERS))
    event = applied_event(
        command,
        applied(decide(None, command, NOW, policy=ACTIVE)),
        event_id="ev-1",
        occurred_at=NOW,
    )

    parsed = msgspec.convert({**event, "sequence": 1, "proof": None}, AppliedEvent)

    assert parsed.request.policy is not None and parsed.request.policy.rule_id == "default"
    assert [r.source.value for r in parsed.request.approval_requirements] == [
        "policy",
        "requester",
        "requester",
        "requester",
    ]


# --------------------------------------------------------------------------- policy_violation


@pytest.mark.parametrize(
    ("args", "asked"),
    [
        ({"initial_status": "approved"}, "initial_status approved"),
        ({"initial_status": "created"}, "initial_status created"),
        ({"initial_status": "pending", "pending_reason": "schedule"}, "pending_reason schedule"),
        ({"pending_reason": "manual_review"}, "pending_reason manual_review"),
    ],
    ids=["approved", "created", "pending-for-a-schedule", "derived-pending-for-review"],
)
def test_a_request_that_needs_approval_may_not_start_any_other_way(
    args: dict[str, Any], asked: str
) -> None:
    rejection = rejected(submit(**CRITICAL_ACCOUNT, **args))

    assert rejection.code is RejectionCode.POLICY_VIOLATION
    assert rejection.message == (
        "rule critical-accounts requires approval (group sre, 2 approvals; actor sec-officer): "
        f"{asked} is not allowed"
    )


@pytest.mark.parametrize(
    "args",
    [{}, {"initial_status": "pending"}, {"pending_reason": "approval"}],
    ids=["left-out", "pending", "pending-for-approval"],
)
def test_a_request_that_needs_approval_may_say_pending_for_approval(args: dict[str, Any]) -> None:
    request = applied(submit(**CRITICAL_ACCOUNT, **args)).request

    assert (request.status, request.pending_reason) == (Status.PENDING, PendingReason.APPROVAL)


def test_a_requester_requirement_may_not_take_a_policy_steps_id() -> None:
    rejection = rejected(
        submit(
            approval_requirements=[{"approval_id": "policy-2", "approver_id": "alice"}],
            **CRITICAL_ACCOUNT,
        )
    )

    assert rejection.code is RejectionCode.POLICY_VIOLATION
    assert rejection.message == (
        "rule critical-accounts requires approval (group sre, 2 approvals; actor sec-officer): "
        "args.approval_requirements[0].approval_id policy-2 is the id of the policy's step 2; "
        "give it another"
    )


def test_a_requester_requirement_may_take_a_policy_id_its_rule_does_not_use() -> None:
    # The default rule has one step, policy-1
    request = applied(
        submit(approval_requirements=[{"approval_id": "policy-2", "approver_id": "alice"}])
    ).request

    assert [(r.approval_id, r.source.value) for r in request.approval_requirements] == [
        ("policy-1", "policy"),
        ("policy-2", "requester"),
    ]


def test_without_a_policy_applied_every_submit_is_refused() -> None:
    rejection = rejected(submit(policy=NO_POLICY_APPLIED))

    assert rejection.code is RejectionCode.POLICY_VIOLATION
    assert rejection.message == "no approval policy is applied: governance policy apply FILE"


def test_the_rejected_event_of_a_policy_violation_is_a_valid_event() -> None:
    command = parse_command(submit_payload(initial_status="approved"))
    event = rejected_event(
        command_id=command.command_id,
        command_type=command.type.value,
        request_id=command.request_id,
        actor=command.actor,
        rejection=rejected(decide(None, command, NOW, policy=ACTIVE)),
        current=None,
        event_id="ev-2",
        occurred_at=NOW,
    )

    parsed = msgspec.convert({**event, "sequence": 2, "proof": None}, RejectedEvent)

    assert parsed.rejection.code is RejectionCode.POLICY_VIOLATION


# --------------------------------------------------------------------- a rule requiring nothing


@pytest.mark.parametrize("status", ["created", "approved"])
def test_a_rule_requiring_nothing_leaves_the_initial_status_free(status: str) -> None:
    outcome = applied(submit(initial_status=status, **DOCS))

    assert outcome.request.status is Status(status)
    assert outcome.request.approval_requirements == ()
    assert outcome.request.expires_at is None
    assert outcome.request.policy is not None and outcome.request.policy.rule_id == "docs"


def test_a_rule_requiring_nothing_with_the_status_left_out_gives_a_created_request() -> None:
    outcome = applied(submit(**DOCS))

    assert outcome.request.status is Status.CREATED
    assert kinds(outcome.decisions) == ["lifecycle.submitted"]


def test_the_requesters_own_requirements_under_a_rule_requiring_nothing_keep_their_steps() -> None:
    request = applied(submit(approval_requirements=THREE_APPROVERS, **DOCS)).request

    assert [(r.approval_id, r.step_order) for r in request.approval_requirements] == [
        ("alice-1", 1),
        ("bob-2", 2),
        ("carol-2", 2),
    ]
    assert (request.status, request.pending_reason) == (Status.PENDING, PendingReason.APPROVAL)


# --------------------------------------------------------------------------- pending_for


def test_pending_for_is_the_expiry_of_a_request_that_asked_for_none() -> None:
    request = applied(submit(**CRITICAL_ACCOUNT)).request

    assert request.expires_at == NOW + timedelta(hours=72)


def test_pending_for_caps_a_later_expiry() -> None:
    request = applied(
        submit(initial_status="pending", expires_at="2027-01-01T00:00:00Z", **CRITICAL_ACCOUNT)
    ).request

    assert request.expires_at == NOW + timedelta(hours=72)


def test_a_requester_may_ask_for_an_earlier_expiry_than_pending_for() -> None:
    request = applied(
        submit(initial_status="pending", expires_at="2026-11-28T15:00:00Z", **CRITICAL_ACCOUNT)
    ).request

    assert request.expires_at == LATER


def test_pending_for_caps_a_pending_request_of_a_rule_requiring_nothing() -> None:
    request = applied(submit(initial_status="pending", pending_reason="schedule", **DOCS)).request

    assert (request.pending_reason, request.expires_at) == (
        PendingReason.SCHEDULE,
        NOW + timedelta(hours=1),
    )


def test_without_pending_for_the_expiry_is_as_asked() -> None:
    request = applied(submit(initial_status="pending", expires_at="2027-01-01T00:00:00Z")).request

    assert request.policy is not None and request.policy.rule_id == "default"
    assert request.expires_at is not None and request.expires_at.year == 2027


# --------------------------------------------------------------------------- the workflow


def test_the_policys_steps_are_decided_before_the_requesters() -> None:
    # Given a critical account change with the requester's own step after the policy's
    request = applied(
        submit(approval_requirements=[{"approver_id": "carol"}], **CRITICAL_ACCOUNT)
    ).request
    sre = frozenset({"sre"})

    # When the requester's approver comes first, it must wait for the policy's steps
    early = rejected(
        issue(request, "approve_requirement", actor_id="carol", approval_id="approval-1")
    )
    assert early.message == "approval approval-1 is in step 3; step 1 is still open"

    # And when two SREs, the security officer and then the requester's approver grant
    for actor_id, approval_id, groups in [
        ("alice", "policy-1", sre),
        ("bob", "policy-1", sre),
        ("sec-officer", "policy-2", frozenset()),
        ("carol", "approval-1", frozenset()),
    ]:
        request = applied(
            issue(
                request,
                "approve_requirement",
                actor_id=actor_id,
                approval_id=approval_id,
                groups=groups,
            )
        ).request

    # Then the request is approved, and still names its policy
    assert request.status is Status.APPROVED
    assert request.policy is not None and request.policy.rule_id == "critical-accounts"


# --------------------------------------------------------------------------- requester mode


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"initial_status": "approved"},
        {"approval_requirements": THREE_APPROVERS, "expires_at": "2027-01-01T00:00:00Z"},
        {"initial_status": "pending", "pending_reason": "schedule"},
    ],
    ids=["bare", "approved", "requirements", "schedule"],
)
def test_requester_mode_is_the_submit_as_it_was(args: dict[str, Any]) -> None:
    as_before = submit(policy=REQUESTER_MODE, groups=frozenset({"contractors"}), **args)

    assert as_before == decide(None, parse_command(submit_payload(**args)), NOW)
    assert applied(as_before).request.policy is None
    assert "policy" not in applied(as_before).decisions[0].metadata
    assert {r.source for r in applied(as_before).request.approval_requirements} <= {
        RequirementSource.REQUESTER
    }
