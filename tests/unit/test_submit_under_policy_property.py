"""Property-based: whatever a requester asks for, a submit under the approval policy gives its
request at least the requirements of the rule it matches, first and unchanged, and a request
that needs approval never starts anywhere but pending for it."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from governance.commands import InvalidCommand, SubmitArgs, parse_command
from governance.model import PendingReason, RequirementSource, Status
from governance.policy import attributes_of, first_match, requirements_for
from governance.rules import Applied, RejectionCode, decide

from .builders import NOW, POLICY, intent_payload, submit_payload
from .test_submit_under_policy import ACTIVE

ABSENT = object()


@st.composite
def requested(draw: st.DrawFn) -> dict[str, Any]:
    """A requirement as a submit may ask for it, an id possibly one of the policy's."""
    spec: dict[str, Any] = {"step_order": draw(st.integers(1, 3))}
    if draw(st.booleans()):
        spec["approver_id"] = draw(st.sampled_from(["alice", "sec-officer", "operator"]))
    else:
        spec["approver_group"] = draw(st.sampled_from(["sre", "cab", "leads"]))
        spec["min_approvals"] = draw(st.integers(1, 3))
    approval_id = draw(st.sampled_from([None, "policy-1", "policy-2", "mine"]))
    if approval_id is not None:
        spec["approval_id"] = approval_id
    return spec


@st.composite
def submits(draw: st.DrawFn) -> dict[str, Any]:
    """A submit payload over the attributes the policy's rules name, asking for anything."""
    args: dict[str, Any] = {
        "state_type": draw(st.sampled_from(["account", "service-config"])),
        "intent": intent_payload(
            risk_level=draw(st.sampled_from(["low", "medium", "high", "critical"])),
            category=draw(st.sampled_from(["docs", "security"])),
        ),
        "approval_requirements": draw(st.lists(requested(), max_size=3)),
    }
    for name, choices in (
        ("initial_status", ["created", "pending", "approved"]),
        ("pending_reason", ["approval", "schedule"]),
        ("expires_at", ["2026-11-28T15:00:00Z", "2027-06-01T00:00:00Z"]),
    ):
        value = draw(st.sampled_from([ABSENT, *choices]))
        if value is not ABSENT:
            args[name] = value
    return submit_payload(**args)


@settings(max_examples=500, deadline=None)
@given(payload=submits(), groups=st.sets(st.sampled_from(["contractors", "ops", "sre"])))
def test_a_requester_never_obtains_fewer_requirements_than_its_rule(
    payload: dict[str, Any], groups: set[str]
) -> None:
    # Given any valid submit
    try:
        command = parse_command(payload)
    except InvalidCommand:
        assume(False)
        raise
    assert isinstance(command.args, SubmitArgs)
    rule = first_match(POLICY, attributes_of(command.args, frozenset(groups)))
    owed = requirements_for(rule)

    # When it is decided under the policy
    outcome = decide(None, command, NOW, groups=frozenset(groups), policy=ACTIVE)

    # Then it is refused, or its request starts with the rule's requirements, unchanged
    event(f"applied under {rule.id}" if isinstance(outcome, Applied) else "refused")
    if not isinstance(outcome, Applied):
        assert outcome.code in (RejectionCode.POLICY_VIOLATION, RejectionCode.INVALID_COMMAND)
        return
    request = outcome.request
    assert len(request.approval_requirements) >= len(owed)
    assert request.approval_requirements[: len(owed)] == owed
    added = request.approval_requirements[len(owed) :]
    assert all(r.source is RequirementSource.REQUESTER for r in added)
    assert all(r.step_order > len(owed) for r in added)
    # And one that needs any approval waits for it
    if request.approval_requirements:
        assert (request.status, request.pending_reason) == (
            Status.PENDING,
            PendingReason.APPROVAL,
        )
    assert request.policy is not None and request.policy.rule_id == rule.id
