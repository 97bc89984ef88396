"""Property-based: any sequence of commands, applied step by step through ``decide``, keeps
the lifecycle's invariants.

Each example submits a request (with or without approval requirements, named or for a
group, in any initial status), then issues a random sequence of commands of random types
with random valid arguments, random actors among the approvers, the groups' members and the
submitter, and random expected revisions (usually the right one). Every command is built as
a wire payload and parsed, so the sequence is also a stream of valid commands; each is
decided with its actor's groups, as the worker reads them from the registry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.codec import request_from_dict, request_to_dict
from governance.commands import Command, CommandType, SupersedeArgs, parse_command
from governance.lifecycle import can_transition, is_terminal
from governance.model import DECISION_TYPES, ApprovalStatus, MutationRequest, PendingReason, Status
from governance.rules import Applied, Outcome, Rejection, RejectionCode, decide

from .builders import (
    NON_SUBMIT_TYPES,
    NOW,
    OPERATOR,
    REQUEST_ID,
    command_payload,
    submit_payload,
    superseding_request,
)

#: The submitter of every request here is OPERATOR: among the actors, in both groups and
#: sometimes named as an approver, so that separation of duties is always in play.
ACTORS = ["alice", "bob", "carol", OPERATOR]
GROUPS = ["cab", "ops"]
MEMBERS: dict[str, frozenset[str]] = {
    "alice": frozenset({"cab"}),
    "bob": frozenset({"cab", "ops"}),
    "carol": frozenset({"cab", "ops"}),
    OPERATOR: frozenset({"cab", "ops"}),
}
VERSIONS = ["v1", "v2", "v3"]
STRATEGIES = ["reject_stale", "require_renewed_approval", "revalidate_on_latest_state"]
#: What ``st.data().draw`` and a composite's ``draw`` both are.
Draw = Callable[[st.SearchStrategy[Any]], Any]
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def submit_commands(draw: st.DrawFn) -> dict[str, Any]:
    """A valid submit: named or group requirements over up to three steps, or an explicit
    initial status."""
    approvers = draw(st.lists(st.sampled_from([*ACTORS[:3], *GROUPS]), max_size=4))
    if approvers and draw(st.integers(0, 4)) == 0:
        # Now and then a requirement naming the submitter, which nobody can ever grant.
        approvers[0] = OPERATOR
    args: dict[str, Any] = {"expected_state_version": draw(st.sampled_from([None, *VERSIONS]))}
    if approvers:
        args["approval_requirements"] = [
            {
                "approval_id": f"{approver}-{index}",
                "step_order": draw(st.integers(1, 3)),
                **(
                    {"approver_group": approver, "min_approvals": draw(st.integers(1, 3))}
                    if approver in GROUPS
                    else {"approver_id": approver}
                ),
            }
            for index, approver in enumerate(approvers)
        ]
    else:
        args["initial_status"] = draw(st.sampled_from(["created", "pending", "approved"]))
        if args["initial_status"] == "pending":
            args["pending_reason"] = draw(st.sampled_from(list(PendingReason)))
            args["expires_at"] = draw(st.sampled_from([None, "2026-11-29T00:00:00Z"]))
    return submit_payload(**args)


#: Command types weighted so that histories run long before reaching a terminal status and
#: approvals get granted often enough to complete.
WEIGHTED_TYPES: list[str] = [
    *["approve_requirement"] * 8,
    *["resolve_version"] * 3,
    *["move_to_pending", "approve"] * 2,
    *NON_SUBMIT_TYPES,
]


def draw_command(
    draw: Draw, request: MutationRequest, step: int, *, with_submit: bool = True
) -> dict[str, Any]:
    """A valid command against ``request``, usually at its revision and by the right actor."""
    type_ = draw(st.sampled_from(["submit", *WEIGHTED_TYPES] if with_submit else WEIGHTED_TYPES))
    if type_ == "submit":
        return submit_payload(command_id=f"cmd-{step}")
    if draw(st.integers(0, 3)) > 0:
        expected_revision = request.revision
    else:
        expected_revision = draw(st.integers(0, request.revision + 2))
    actor_id = draw(st.sampled_from(ACTORS))
    args: dict[str, Any] = {}
    if type_ == "move_to_pending":
        args["pending_reason"] = draw(st.sampled_from(list(PendingReason))).value
        args["expires_at"] = draw(st.sampled_from([None, "2026-11-29T00:00:00Z"]))
    elif type_ == "supersede":
        args["superseding_request_id"] = draw(st.sampled_from(["req-43", REQUEST_ID]))
    elif type_ in ("approve_requirement", "reject_requirement"):
        requirements = list(request.approval_requirements)
        chosen = draw(st.sampled_from([*requirements, None]))
        args["approval_id"] = "unknown-1" if chosen is None else chosen.approval_id
        if chosen is not None and draw(st.integers(0, 3)) > 0:
            # Usually someone who could decide it by name or by group (the submitter too).
            eligible = (
                [chosen.approver_id]
                if chosen.approver_id is not None
                else [a for a in ACTORS if chosen.approver_group in MEMBERS[a]]
            )
            actor_id = draw(st.sampled_from(eligible))
    elif type_ == "resolve_version":
        args["current_state_version"] = draw(st.sampled_from(VERSIONS))
        args["strategy"] = draw(st.sampled_from(STRATEGIES))
    return command_payload(
        type_,
        expected_revision=expected_revision,
        actor_id=actor_id,
        command_id=f"cmd-{step}",
        **args,
    )


def draw_superseding(draw: Draw, command: Command) -> MutationRequest | None:
    """What the worker would have locked as a supersede's superseding request: nothing, or
    that request in any status. Other command types get None."""
    if not isinstance(command.args, SupersedeArgs):
        return None
    status = draw(st.sampled_from([None, *Status]))
    if status is None:
        return None
    return superseding_request(status, request_id=command.args.superseding_request_id)


def decide_as_registered(
    request: MutationRequest | None,
    command: Command,
    superseding: MutationRequest | None = None,
) -> Outcome:
    """``decide`` with the groups the command's actor is registered in."""
    return decide(
        request, command, NOW, superseding, groups=MEMBERS.get(command.actor.id, frozenset())
    )


def check_step(
    before: MutationRequest, snapshot: MutationRequest, command: Command, outcome: Outcome
) -> None:
    """The invariants one decision must keep; ``snapshot`` is a deep copy of ``before``."""
    if isinstance(outcome, Rejection):
        # A rejection leaves the request as it was, and says where it stands.
        assert before == snapshot
        assert outcome.current_revision == before.revision
        assert outcome.current_status is before.status
        return
    after = outcome.request
    # A command is applied only when it expected the revision the request was at, and then
    # it moved the request exactly one revision on, from where it stood.
    assert command.expected_revision == before.revision
    assert after.revision == before.revision + 1
    assert outcome.from_status is before.status
    # A terminal request never changes.
    assert not is_terminal(before.status)
    # A status change is one the lifecycle table allows.
    assert after.status is before.status or can_transition(before.status, after.status)
    # Decisions only grow: the old history, then what this command appended.
    assert outcome.decisions
    assert after.decisions == before.decisions + outcome.decisions
    # The identity of the request never changes.
    assert (after.request_id, after.created_at, after.intent) == (
        before.request_id,
        before.created_at,
        before.intent,
    )
    if command.type in (CommandType.APPROVE_REQUIREMENT, CommandType.REJECT_REQUIREMENT):
        # A requirement is decided only by someone it admits who is not the submitter.
        actor_id = command.actor.id
        assert actor_id != before.context.actor.id
        (target,) = (
            r
            for r in before.approval_requirements
            if r.approval_id == getattr(command.args, "approval_id", None)
        )
        assert actor_id == target.approver_id or (
            target.approver_group is not None and target.approver_group in MEMBERS[actor_id]
        )


def check_request(request: MutationRequest) -> None:
    """The invariants every request, however it was reached, keeps."""
    # pending_reason is set exactly when the request is pending; only then may it expire.
    assert (request.pending_reason is not None) == (request.status is Status.PENDING)
    assert request.expires_at is None or request.status is Status.PENDING
    # A request is approved only once none of its approval requirements is pending.
    assert request.status is not Status.APPROVED or all(
        r.status is not ApprovalStatus.PENDING for r in request.approval_requirements
    )
    check_requirements(request)
    # Every decision is of a type its category admits.
    assert all(d.type in DECISION_TYPES[d.category] for d in request.decisions)
    # The request survives its wire form unchanged.
    assert request_from_dict(request_to_dict(request, with_decisions=True)) == request


def check_requirements(request: MutationRequest) -> None:
    """Separation of duties and group counting, as every request's requirements show them."""
    submitter = request.context.actor.id
    holders: list[set[str]] = []
    for r in request.approval_requirements:
        granted_by = [g.actor_id for g in r.grants]
        # Grants are distinct members', never more than needed, and only a group's.
        assert len(granted_by) == len(set(granted_by)) <= r.min_approvals
        assert r.approver_group is not None or not granted_by
        if r.status is ApprovalStatus.APPROVED:
            # Approved: by exactly min_approvals distinct grants, settled by the last one,
            # or by its named approver.
            if r.approver_group is not None:
                assert len(granted_by) == r.min_approvals
                assert r.decided_by == granted_by[-1]
            else:
                assert r.decided_by == r.approver_id
        elif r.status is ApprovalStatus.PENDING:
            assert r.decided_by is None and len(granted_by) < r.min_approvals
        # The submitter never decides, nor grants, any requirement.
        assert submitter != r.decided_by and submitter not in granted_by
        holders.append(set(granted_by))
        if r.status is ApprovalStatus.APPROVED and r.decided_by is not None:
            holders[-1].add(r.decided_by)
    # No actor holds a grant on two requirements of one request.
    for index, first in enumerate(holders):
        for second in holders[index + 1 :]:
            assert not first & second


@PROPERTY_SETTINGS
@given(data=st.data(), submit=submit_commands(), steps=st.integers(1, 25))
def test_any_sequence_of_commands_keeps_the_lifecycle_invariants(
    data: st.DataObject, submit: dict[str, Any], steps: int
) -> None:
    first = decide(None, parse_command(submit), NOW)
    assert isinstance(first, Applied)
    request = first.request
    assert request.revision == 1
    check_request(request)

    for step in range(steps):
        command = parse_command(draw_command(data.draw, request, step))
        snapshot = copy.deepcopy(request)

        outcome = decide_as_registered(request, command, draw_superseding(data.draw, command))

        check_step(request, snapshot, command, outcome)
        if isinstance(outcome, Applied):
            request = outcome.request
            check_request(request)


@PROPERTY_SETTINGS
@given(data=st.data(), submit=submit_commands(), steps=st.integers(0, 10))
def test_of_two_commands_issued_against_the_same_snapshot_at_most_one_is_applied(
    data: st.DataObject, submit: dict[str, Any], steps: int
) -> None:
    # Given a request reached by some history
    outcome = decide(None, parse_command(submit), NOW)
    assert isinstance(outcome, Applied)
    request = outcome.request
    for step in range(steps):
        command = parse_command(draw_command(data.draw, request, step))
        next_outcome = decide_as_registered(request, command, draw_superseding(data.draw, command))
        if isinstance(next_outcome, Applied):
            request = next_outcome.request

    # When two commands are issued against it at its revision, one after the other
    first, second = (
        parse_command(
            {
                **draw_command(data.draw, request, 100 + i, with_submit=False),
                "expected_revision": request.revision,
            }
        )
        for i in range(2)
    )
    winner = decide_as_registered(request, first, draw_superseding(data.draw, first))

    # Then, when the first was applied, the second loses with a concurrency conflict
    if isinstance(winner, Applied):
        loser = decide_as_registered(winner.request, second, draw_superseding(data.draw, second))
        assert isinstance(loser, Rejection)
        assert loser.code is RejectionCode.CONCURRENCY_CONFLICT
        assert (loser.current_revision, loser.current_status) == (
            winner.request.revision,
            winner.request.status,
        )
