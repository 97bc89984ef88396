"""The decision functions: one pure rule per command type, and ``decide`` in front of them.

Each rule takes the request as it stands (or None for ``submit``), a validated command and
the time of the decision, and returns an :class:`Applied` outcome (the new request and the
decisions it appends) or a :class:`Rejection`. ``decide`` runs the checks every command
shares, in the contract's order after validation and idempotency: existence, revision,
then the rule. The worker's guarded transaction makes this one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from governance.commands import (
    Command,
    CommandType,
    MoveToPendingArgs,
    RequirementArgs,
    ResolutionStrategy,
    ResolveVersionArgs,
    SubmitArgs,
    SupersedeArgs,
)
from governance.lifecycle import can_transition, is_terminal
from governance.model import (
    ApprovalRequirement,
    ApprovalStatus,
    Decision,
    DecisionCategory,
    MutationRequest,
    PendingReason,
    RequestContext,
    Status,
)


class RejectionCode(StrEnum):
    """Why a command was not applied (**contract**)."""

    CONCURRENCY_CONFLICT = "concurrency_conflict"
    INVALID_TRANSITION = "invalid_transition"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    APPROVAL_NOT_ALLOWED = "approval_not_allowed"
    INVALID_COMMAND = "invalid_command"
    DUPLICATE_COMMAND = "duplicate_command"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A command that was answered but not applied."""

    code: RejectionCode
    message: str
    expected_revision: int | None = None
    current_revision: int | None = None
    current_status: Status | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """A command that moved ``request`` to its next revision."""

    request: MutationRequest
    decisions: tuple[Decision, ...]
    from_status: Status | None


Outcome = Applied | Rejection
Rule = Callable[[MutationRequest, Command, datetime], Outcome]


def decide(current: MutationRequest | None, command: Command, now: datetime) -> Outcome:
    """Apply ``command`` to the request as locked (``current``), or say why not."""
    if command.type is CommandType.SUBMIT:
        if current is not None:
            return _rejection(
                RejectionCode.ALREADY_EXISTS,
                f"request {command.request_id} already exists",
                current,
                command,
            )
        return submit(command, now)
    if current is None:
        return Rejection(
            RejectionCode.NOT_FOUND,
            f"request {command.request_id} does not exist",
            expected_revision=command.expected_revision,
        )
    if command.expected_revision != current.revision:
        return _rejection(
            RejectionCode.CONCURRENCY_CONFLICT,
            f"expected revision {command.expected_revision}, but the request is at revision "
            f"{current.revision} ({current.status.value})",
            current,
            command,
        )
    return RULES[command.type](current, command, now)


# --------------------------------------------------------------------------- helpers


def _rejection(
    code: RejectionCode, message: str, current: MutationRequest, command: Command
) -> Rejection:
    return Rejection(
        code,
        message,
        expected_revision=command.expected_revision,
        current_revision=current.revision,
        current_status=current.status,
    )


def _decision(
    category: DecisionCategory, type_: str, command: Command, now: datetime, **metadata: Any
) -> Decision:
    return Decision(
        category=category,
        type=type_,
        actor=command.actor,
        occurred_at=now,
        reason=command.reason,
        metadata={**command.metadata, **metadata},
    )


def _lifecycle(to_status: Status, command: Command, now: datetime, **metadata: Any) -> Decision:
    return _decision(DecisionCategory.LIFECYCLE, to_status.value, command, now, **metadata)


def _next(
    request: MutationRequest, decisions: tuple[Decision, ...], now: datetime, **changes: Any
) -> Applied:
    """The request one revision on, with ``changes`` and ``decisions`` appended."""
    status = changes.get("status", request.status)
    if status is not Status.PENDING:
        changes["pending_reason"] = None
        changes["expires_at"] = None
    new_request = replace(
        request,
        revision=request.revision + 1,
        updated_at=now,
        decisions=request.decisions + decisions,
        **changes,
    )
    return Applied(new_request, decisions, from_status=request.status)


def _move(
    request: MutationRequest,
    command: Command,
    now: datetime,
    to_status: Status,
    extra: tuple[Decision, ...] = (),
    decision_metadata: dict[str, Any] | None = None,
    **changes: Any,
) -> Outcome:
    """A guarded lifecycle transition: the table decides, one lifecycle decision records."""
    if not can_transition(request.status, to_status):
        return _rejection(
            RejectionCode.INVALID_TRANSITION,
            f"cannot move from {request.status.value} to {to_status.value}",
            request,
            command,
        )
    decisions = (*extra, _lifecycle(to_status, command, now, **(decision_metadata or {})))
    return _next(request, decisions, now, status=to_status, **changes)


# --------------------------------------------------------------------------- rules


def submit(command: Command, now: datetime) -> Outcome:
    """Create a request at revision 1 in its initial status."""
    args = command.args
    assert isinstance(args, SubmitArgs)
    requirements = tuple(
        ApprovalRequirement(
            approval_id=spec.approval_id or f"approval-{index + 1}",
            approver_id=spec.approver_id,
            approver_name=spec.approver_name,
            description=spec.description,
            step_order=spec.step_order,
        )
        for index, spec in enumerate(args.approval_requirements)
    )
    taken = {r.approval_id for r in requirements}
    if len(taken) != len(requirements):
        return Rejection(
            RejectionCode.INVALID_COMMAND,
            "args.approval_requirements: generated approval_id collides with a "
            "given one; give every requirement an approval_id",
        )
    decisions = [_decision(DecisionCategory.LIFECYCLE, "submitted", command, now)]
    if args.initial_status is not Status.CREATED:
        decisions.append(_lifecycle(args.initial_status, command, now))
    if requirements:
        decisions.append(
            _decision(
                DecisionCategory.APPROVAL,
                "requested",
                command,
                now,
                approval_ids=[r.approval_id for r in requirements],
            )
        )
    request = MutationRequest(
        request_id=command.request_id,
        state_id=args.state_id,
        state_type=args.state_type,
        mutation_type=args.mutation_type,
        intent=args.intent,
        context=RequestContext(actor=command.actor, reason=command.reason),
        status=args.initial_status,
        pending_reason=args.pending_reason,
        approval_requirements=requirements,
        decisions=tuple(decisions),
        revision=1,
        expected_state_version=args.expected_state_version,
        expires_at=args.expires_at,
        created_at=now,
        updated_at=now,
        metadata=args.metadata,
    )
    return Applied(request, tuple(decisions), from_status=None)


def move_to_pending(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    args = command.args
    assert isinstance(args, MoveToPendingArgs)
    return _move(
        request,
        command,
        now,
        Status.PENDING,
        pending_reason=args.pending_reason,
        expires_at=args.expires_at,
    )


def approve(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _move(request, command, now, Status.APPROVED)


def reject(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _move(request, command, now, Status.REJECTED)


def cancel(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _move(request, command, now, Status.CANCELED)


def expire(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _move(request, command, now, Status.EXPIRED)


def mark_executed(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _move(request, command, now, Status.EXECUTED)


def supersede(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    args = command.args
    assert isinstance(args, SupersedeArgs)
    if args.superseding_request_id == request.request_id:
        return _rejection(
            RejectionCode.INVALID_COMMAND,
            "args.superseding_request_id: a request cannot supersede itself",
            request,
            command,
        )
    return _move(
        request,
        command,
        now,
        Status.SUPERSEDED,
        decision_metadata={"superseding_request_id": args.superseding_request_id},
        metadata={**request.metadata, "superseded_by": args.superseding_request_id},
    )


def _decide_requirement(
    request: MutationRequest, command: Command, now: datetime, verdict: ApprovalStatus
) -> Outcome:
    """Grant or refuse one approval requirement, under the approval workflow's rules."""
    args = command.args
    assert isinstance(args, RequirementArgs)

    def refuse(message: str) -> Rejection:
        return _rejection(RejectionCode.APPROVAL_NOT_ALLOWED, message, request, command)

    if request.status is not Status.PENDING or request.pending_reason is not PendingReason.APPROVAL:
        return refuse(
            f"request is {request.status.value}"
            + (f" ({request.pending_reason.value})" if request.pending_reason else "")
            + ", not pending approval"
        )
    target = next(
        (r for r in request.approval_requirements if r.approval_id == args.approval_id), None
    )
    if target is None:
        return refuse(f"no approval requirement {args.approval_id}")
    if target.approver_id != command.actor.id:
        return refuse(
            f"approval {target.approval_id} is for {target.approver_id}, not {command.actor.id}"
        )
    if target.status is not ApprovalStatus.PENDING:
        return refuse(f"approval {target.approval_id} was already decided ({target.status.value})")
    current_step = min(
        r.step_order for r in request.approval_requirements if r.status is ApprovalStatus.PENDING
    )
    if target.step_order != current_step:
        return refuse(
            f"approval {target.approval_id} is in step {target.step_order}; "
            f"step {current_step} is still open"
        )

    decided = replace(
        target, status=verdict, decided_at=now, decided_by=command.actor.id, reason=command.reason
    )
    requirements = tuple(
        decided if r.approval_id == target.approval_id else r for r in request.approval_requirements
    )
    approval_type = "granted" if verdict is ApprovalStatus.APPROVED else "rejected"
    approval_decision = _decision(
        DecisionCategory.APPROVAL,
        approval_type,
        command,
        now,
        approval_id=target.approval_id,
        step_order=target.step_order,
    )
    if verdict is ApprovalStatus.REJECTED:
        return _move(
            request,
            command,
            now,
            Status.REJECTED,
            extra=(approval_decision,),
            approval_requirements=requirements,
        )
    if all(r.status is ApprovalStatus.APPROVED for r in requirements):
        return _move(
            request,
            command,
            now,
            Status.APPROVED,
            extra=(approval_decision,),
            approval_requirements=requirements,
        )
    return _next(request, (approval_decision,), now, approval_requirements=requirements)


def approve_requirement(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _decide_requirement(request, command, now, ApprovalStatus.APPROVED)


def reject_requirement(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    return _decide_requirement(request, command, now, ApprovalStatus.REJECTED)


def resolve_version(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    """Reconcile the version the request was made against with the state's current one."""
    args = command.args
    assert isinstance(args, ResolveVersionArgs)
    if is_terminal(request.status):
        return _rejection(
            RejectionCode.INVALID_TRANSITION,
            f"request is {request.status.value}; its version is settled",
            request,
            command,
        )
    version_meta = {
        "expected_state_version": request.expected_state_version,
        "current_state_version": args.current_state_version,
        "strategy": args.strategy.value,
    }

    def resolution(type_: str) -> Decision:
        return _decision(DecisionCategory.VERSION_RESOLUTION, type_, command, now, **version_meta)

    if request.expected_state_version in (None, args.current_state_version):
        return _next(request, (resolution("validated"),), now)
    if args.strategy is ResolutionStrategy.REJECT_STALE:
        return _move(
            request, command, now, Status.REJECTED, extra=(resolution("rejected_as_stale"),)
        )
    if args.strategy is ResolutionStrategy.REVALIDATE_ON_LATEST_STATE:
        return _next(
            request,
            (resolution("revalidation_required"),),
            now,
            expected_state_version=args.current_state_version,
        )
    # require_renewed_approval: every requirement goes back to pending, or the request would
    # wait for approvals that were already spent on the stale version and never come again.
    reset = tuple(
        replace(r, status=ApprovalStatus.PENDING, decided_at=None, decided_by=None, reason=None)
        for r in request.approval_requirements
    )
    renewed = resolution("renewed_approval_required")
    changes: dict[str, Any] = {
        "approval_requirements": reset,
        "expected_state_version": args.current_state_version,
        "pending_reason": PendingReason.APPROVAL,
        "expires_at": None,
    }
    if request.status is Status.PENDING:
        return _next(request, (renewed,), now, **changes)
    return _move(request, command, now, Status.PENDING, extra=(renewed,), **changes)


RULES: dict[CommandType, Rule] = {
    CommandType.MOVE_TO_PENDING: move_to_pending,
    CommandType.APPROVE: approve,
    CommandType.REJECT: reject,
    CommandType.CANCEL: cancel,
    CommandType.EXPIRE: expire,
    CommandType.SUPERSEDE: supersede,
    CommandType.MARK_EXECUTED: mark_executed,
    CommandType.APPROVE_REQUIREMENT: approve_requirement,
    CommandType.REJECT_REQUIREMENT: reject_requirement,
    CommandType.RESOLVE_VERSION: resolve_version,
}
