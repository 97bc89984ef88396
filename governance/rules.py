"""The decision functions: one pure rule per command type, and ``decide`` in front of them.

Each rule takes the request as it stands (or None for ``submit``), a validated command and
the time of the decision, and returns an :class:`Applied` outcome (the new request and the
decisions it appends) or a :class:`Rejection`; ``supersede`` also takes the superseding
request, and the requirement rules the deciding actor's groups. ``decide`` runs the checks
every command shares, in the contract's order after validation, idempotency and
authentication: existence, revision, then the rule. Authorization comes between existence
and revision (:func:`governance.trust.authorize` leaves a command whose request's existence
is wrong to ``decide``, so ``authorize(...) or decide(...)`` keeps that order). The worker's
guarded transaction locks the requests :func:`requests_to_lock` names and makes this call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from governance.codec import policy_reference_to_dict
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
from governance.lifecycle import SUPERSEDING_STATUSES, can_transition, is_terminal
from governance.model import (
    ApprovalRequirement,
    ApprovalStatus,
    Decision,
    DecisionCategory,
    Grant,
    MutationRequest,
    PendingReason,
    PolicyReference,
    RequestContext,
    Status,
)
from governance.policy import (
    REQUESTER_MODE,
    ActivePolicy,
    NoPolicyApplied,
    PolicyMode,
    PolicyRule,
    attributes_of,
    capped_expiry,
    first_match,
    requirements_for,
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
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    POLICY_VIOLATION = "policy_violation"


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

#: No recorded grant is void.
_NONE_VOID: Mapping[tuple[str, str], str] = {}
Rule = Callable[[MutationRequest, Command, datetime], Outcome]


def decide(
    current: MutationRequest | None,
    command: Command,
    now: datetime,
    superseding: MutationRequest | None = None,
    *,
    groups: frozenset[str] = frozenset(),
    policy: PolicyMode = REQUESTER_MODE,
    void_grants: Mapping[tuple[str, str], str] = _NONE_VOID,
) -> Outcome:
    """Apply ``command`` to the request as locked (``current``), or say why not.

    ``superseding`` is, for a ``supersede`` command, the superseding request as the same
    transaction locked it (None when it does not exist); other command types ignore it.
    ``groups`` are the groups the acting actor (``command.actor``) is registered in: who
    may grant a group requirement (``approve_requirement`` / ``reject_requirement``), and
    which rule of the policy a ``submit`` matches. ``policy`` is how a ``submit`` takes its
    approval requirements (see :func:`submit`); other command types ignore it.
    ``void_grants`` says, by ``(approval_id, actor_id)``, which grants already recorded on
    the request no longer count and why (the actor left the group or was deactivated, the
    key that signed the grant was revoked): consulted when a grant would complete a group
    requirement (see :func:`approve_requirement`).
    """
    if command.type is CommandType.SUBMIT:
        if current is not None:
            return _rejection(
                RejectionCode.ALREADY_EXISTS,
                f"request {command.request_id} already exists",
                current,
                command,
            )
        return submit(command, now, groups=groups, policy=policy)
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
    if command.type is CommandType.SUPERSEDE:
        return supersede(current, command, now, superseding)
    if command.type is CommandType.APPROVE_REQUIREMENT:
        return approve_requirement(current, command, now, groups=groups, void_grants=void_grants)
    if command.type is CommandType.REJECT_REQUIREMENT:
        return reject_requirement(current, command, now, groups=groups)
    return RULES[command.type](current, command, now)


def requests_to_lock(command: Command) -> tuple[str, ...]:
    """The ids of the requests ``command``'s transaction must lock before it is decided.

    Every command locks the request it addresses; ``supersede`` also locks the superseding
    request (unless it names the same one), so that request cannot stop being live between
    the check and the commit. The tuple says which rows, not in which order: the caller
    locks them in one global order, so that A-by-B and B-by-A cannot deadlock.
    """
    args = command.args
    if isinstance(args, SupersedeArgs) and args.superseding_request_id != command.request_id:
        return (command.request_id, args.superseding_request_id)
    return (command.request_id,)


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


def submit(
    command: Command,
    now: datetime,
    *,
    groups: frozenset[str] = frozenset(),
    policy: PolicyMode = REQUESTER_MODE,
) -> Outcome:
    """Create a request at revision 1 in its initial status.

    How it takes its approval requirements depends on ``policy``:

    - :class:`~governance.policy.ActivePolicy` (required mode): the first rule of the policy
      that the request and its submitter (in ``groups``) match gives its steps as
      requirements ``policy-1``, ``policy-2``, ...; the submit's own follow as further
      steps. A request that needs any approval starts pending for it, and a submit that asks
      for another status or reason is refused ``policy_violation``. The rule's
      ``pending_for`` caps its expiry, and the request and its ``submitted`` decision name
      the policy version, its sha256 and the rule.
    - :class:`~governance.policy.NoPolicyApplied` (required mode, nothing applied yet):
      refused ``policy_violation``.
    - :class:`~governance.policy.RequesterMode`: the submit's own requirements and status, and
      no policy.
    """
    args = command.args
    assert isinstance(args, SubmitArgs)
    requested = tuple(
        ApprovalRequirement(
            approval_id=spec.approval_id or f"approval-{index + 1}",
            approver_id=spec.approver_id,
            approver_group=spec.approver_group,
            min_approvals=spec.min_approvals,
            approver_name=spec.approver_name,
            description=spec.description,
            step_order=spec.step_order,
        )
        for index, spec in enumerate(args.approval_requirements)
    )
    taken = {r.approval_id for r in requested}
    if len(taken) != len(requested):
        return Rejection(
            RejectionCode.INVALID_COMMAND,
            "args.approval_requirements: generated approval_id collides with a "
            "given one; give every requirement an approval_id",
        )
    if isinstance(policy, NoPolicyApplied):
        return Rejection(
            RejectionCode.POLICY_VIOLATION,
            "no approval policy is applied: governance policy apply FILE",
        )
    if not isinstance(policy, ActivePolicy):
        return _submitted(
            command,
            now,
            requested,
            args.initial_status,
            args.pending_reason,
            args.expires_at,
            reference=None,
        )
    rule = first_match(policy.policy, attributes_of(args, groups))
    required = requirements_for(rule)
    # The requester's steps come after the policy's, so the policy's are decided first.
    requirements = required + tuple(
        replace(r, step_order=r.step_order + len(required)) for r in requested
    )
    violation = _policy_violation(args, rule, required, requested)
    if violation is not None:
        return Rejection(RejectionCode.POLICY_VIOLATION, violation)
    status, pending_reason = args.initial_status, args.pending_reason
    if requirements:
        status, pending_reason = Status.PENDING, PendingReason.APPROVAL
    expires_at = capped_expiry(rule, now, args.expires_at) if status is Status.PENDING else None
    return _submitted(
        command,
        now,
        requirements,
        status,
        pending_reason,
        expires_at,
        reference=policy.reference(rule),
    )


def _policy_violation(
    args: SubmitArgs,
    rule: PolicyRule,
    required: tuple[ApprovalRequirement, ...],
    requested: tuple[ApprovalRequirement, ...],
) -> str | None:
    """Why a submit under ``rule`` may not be applied as asked, if it may not: a request that
    needs approval must start pending for it, and the requester's requirements may not take
    the ids of the policy's."""
    if not (required or requested):
        return None

    def needs() -> str:
        return f"rule {rule.id} requires approval ({rule.requires()})"

    policy_ids = {r.approval_id: r.step_order for r in required}
    for index, r in enumerate(requested):
        if r.approval_id in policy_ids:
            return (
                f"{needs()}: args.approval_requirements[{index}].approval_id {r.approval_id} "
                f"is the id of the policy's step {policy_ids[r.approval_id]}; give it another"
            )
    # Absent, initial_status was derived: created when nothing else implied pending.
    if args.initial_status_given and args.initial_status is not Status.PENDING:
        return f"{needs()}: initial_status {args.initial_status.value} is not allowed"
    if args.pending_reason not in (None, PendingReason.APPROVAL):
        assert args.pending_reason is not None
        return f"{needs()}: pending_reason {args.pending_reason.value} is not allowed"
    return None


def _submitted(
    command: Command,
    now: datetime,
    requirements: tuple[ApprovalRequirement, ...],
    status: Status,
    pending_reason: PendingReason | None,
    expires_at: datetime | None,
    reference: PolicyReference | None,
) -> Applied:
    """The request a submit creates, with the decisions that start its history: submitted
    (naming the policy, when there is one, so that the decision chain covers it), then its
    status unless created, then the approvals requested, if any."""
    args = command.args
    assert isinstance(args, SubmitArgs)
    submitted = {} if reference is None else {"policy": policy_reference_to_dict(reference)}
    decisions = [_decision(DecisionCategory.LIFECYCLE, "submitted", command, now, **submitted)]
    if status is not Status.CREATED:
        decisions.append(_lifecycle(status, command, now))
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
        status=status,
        pending_reason=pending_reason,
        approval_requirements=requirements,
        decisions=tuple(decisions),
        revision=1,
        expected_state_version=args.expected_state_version,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
        metadata=args.metadata,
        policy=reference,
    )
    return Applied(request, tuple(decisions), from_status=None)


def move_to_pending(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    """Make the request wait, for the command's reason and until its expiry, if any."""
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
    """Approve the request, unless some of its approval requirements are still pending.

    A pending requirement is for its approvers to decide; a lifecycle approve would
    step past it and leave an approved request still waiting for approvals. When the table
    forbids approving the request at all, that is what the sender is told instead: deciding
    the requirements would not make the command possible.
    """
    pending = sum(r.status is ApprovalStatus.PENDING for r in request.approval_requirements)
    if pending and can_transition(request.status, Status.APPROVED):
        return _rejection(
            RejectionCode.APPROVAL_NOT_ALLOWED,
            f"{pending} approval requirement{'s are' if pending > 1 else ' is'} still "
            "pending: approval requirements must be decided through approve_requirement, "
            "not by approve",
            request,
            command,
        )
    return _move(request, command, now, Status.APPROVED)


def reject(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    """Reject the request."""
    return _move(request, command, now, Status.REJECTED)


def cancel(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    """Cancel the request."""
    return _move(request, command, now, Status.CANCELED)


def expire(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    """Expire the request."""
    return _move(request, command, now, Status.EXPIRED)


def mark_executed(request: MutationRequest, command: Command, now: datetime) -> Outcome:
    """Record that the request's mutation was carried out."""
    return _move(request, command, now, Status.EXECUTED)


def supersede(
    request: MutationRequest,
    command: Command,
    now: datetime,
    superseding: MutationRequest | None,
) -> Outcome:
    """Mark the request superseded by ``superseding``: another request, and a live one.

    ``superseding`` is the request the command names, as the transaction locked it, or None
    when it does not exist. The command is checked before the table: a request cannot
    supersede itself, and only a request that exists and is live can replace another.
    """
    args = command.args
    assert isinstance(args, SupersedeArgs)
    successor_id = args.superseding_request_id
    if successor_id == request.request_id:
        return _rejection(
            RejectionCode.INVALID_COMMAND,
            "args.superseding_request_id: a request cannot supersede itself",
            request,
            command,
        )
    if superseding is None:
        return _rejection(
            RejectionCode.NOT_FOUND,
            f"superseding request {successor_id} does not exist",
            request,
            command,
        )
    if superseding.request_id != successor_id:
        # Judging another request than the one named would be a silent wrong answer.
        raise ValueError(
            f"the superseding request given is {superseding.request_id}, "
            f"but the command names {successor_id}"
        )
    if superseding.status not in SUPERSEDING_STATUSES:
        return _rejection(
            RejectionCode.INVALID_TRANSITION,
            f"superseding request {successor_id} is {superseding.status.value}; only a "
            "created, pending, approved or executed request can supersede another",
            request,
            command,
        )
    return _move(
        request,
        command,
        now,
        Status.SUPERSEDED,
        decision_metadata={"superseding_request_id": successor_id},
        metadata={**request.metadata, "superseded_by": successor_id},
    )


def _decide_requirement(
    request: MutationRequest,
    command: Command,
    now: datetime,
    verdict: ApprovalStatus,
    groups: frozenset[str],
    void_grants: Mapping[tuple[str, str], str] = _NONE_VOID,
) -> Outcome:
    """Grant or refuse one approval requirement, under the approval workflow's rules.

    In order: the request must be pending approval and have the requirement; the submitter
    decides none of its requirements; a named requirement is decided by its approver, a
    group requirement by a member of its group (``groups`` are the actor's); the
    requirement must still be pending and in the open step; and an actor who holds a grant
    on one requirement of the request decides no other (nor the same one twice).
    """
    args = command.args
    assert isinstance(args, RequirementArgs)
    actor_id = command.actor.id
    submitter = request.context.actor.id

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
    # Accepted at submit (roles change), a requirement naming the submitter still needs
    # someone else to decide it: for a named approver nobody else ever can.
    never = (
        f"; approval {target.approval_id} names the submitter {submitter} as its approver, so "
        "it can only be granted by someone else, which for a named approver means never"
        if target.approver_id == submitter
        else ""
    )
    if actor_id == submitter:
        return refuse(
            f"{actor_id} submitted the request, and the submitter may not decide any of its "
            f"approval requirements{never}"
        )
    if target.approver_group is None:
        if target.approver_id != actor_id:
            return refuse(
                f"approval {target.approval_id} is for {target.approver_id}, not {actor_id}" + never
            )
    elif target.approver_group not in groups:
        return refuse(
            f"approval {target.approval_id} is for a member of group {target.approver_group}; "
            f"{actor_id} is not one"
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
    held = _granted_by(request, actor_id)
    if held is not None:
        return refuse(
            f"{actor_id} already granted approval {held}"
            + (
                ""
                if held == target.approval_id
                else f", and one actor decides at most one requirement of a request, "
                f"so not {target.approval_id} too"
            )
        )

    metadata: dict[str, Any] = {"approval_id": target.approval_id, "step_order": target.step_order}
    voided: tuple[Decision, ...] = ()
    if verdict is ApprovalStatus.APPROVED and target.approver_group is not None:
        grants = (*target.grants, Grant(actor_id=actor_id, decided_at=now, reason=command.reason))
        if len(grants) >= target.min_approvals:
            # Completion counts only grants that still stand: each from an active member of
            # the group whose signing key is not revoked. A void one is recorded, and dropped.
            void = [g for g in target.grants if (target.approval_id, g.actor_id) in void_grants]
            voided = tuple(
                _decision(
                    DecisionCategory.APPROVAL,
                    "grant_voided",
                    command,
                    now,
                    approval_id=target.approval_id,
                    step_order=target.step_order,
                    voided_actor_id=g.actor_id,
                    why=void_grants[(target.approval_id, g.actor_id)],
                )
                for g in void
            )
            grants = tuple(g for g in grants if g not in void)
        metadata.update(grants_so_far=len(grants), min_approvals=target.min_approvals)
        if len(grants) < target.min_approvals:
            decided = replace(target, grants=grants)
        else:
            decided = replace(
                target,
                grants=grants,
                status=ApprovalStatus.APPROVED,
                decided_at=now,
                decided_by=actor_id,
                reason=command.reason,
            )
    else:
        decided = replace(
            target, status=verdict, decided_at=now, decided_by=actor_id, reason=command.reason
        )
    requirements = tuple(
        decided if r.approval_id == target.approval_id else r for r in request.approval_requirements
    )
    approval_type = "granted" if verdict is ApprovalStatus.APPROVED else "rejected"
    approval_decisions = (
        *voided,
        _decision(DecisionCategory.APPROVAL, approval_type, command, now, **metadata),
    )
    if verdict is ApprovalStatus.REJECTED:
        return _move(
            request,
            command,
            now,
            Status.REJECTED,
            extra=approval_decisions,
            approval_requirements=requirements,
        )
    if all(r.status is ApprovalStatus.APPROVED for r in requirements):
        return _move(
            request,
            command,
            now,
            Status.APPROVED,
            extra=approval_decisions,
            approval_requirements=requirements,
        )
    return _next(request, approval_decisions, now, approval_requirements=requirements)


def _granted_by(request: MutationRequest, actor_id: str) -> str | None:
    """The requirement of ``request`` on which ``actor_id`` holds a current grant, if any.

    A named requirement's grant is its approved ``decided_by``; a group requirement's are
    its ``grants``. A rejection is not counted: it rejects the request, which then has no
    requirement left to decide.
    """
    for r in request.approval_requirements:
        if any(g.actor_id == actor_id for g in r.grants) or (
            r.status is ApprovalStatus.APPROVED and r.decided_by == actor_id
        ):
            return r.approval_id
    return None


def approve_requirement(
    request: MutationRequest,
    command: Command,
    now: datetime,
    *,
    groups: frozenset[str] = frozenset(),
    void_grants: Mapping[tuple[str, str], str] = _NONE_VOID,
) -> Outcome:
    """Grant one approval requirement (one grant of a group's); the last grant approves the
    request. ``groups`` are the deciding actor's registered groups.

    A grant that would complete a group requirement first re-checks the grants before it:
    those ``void_grants`` names (by approval and actor, with why) are recorded as
    ``approval.grant_voided`` decisions and no longer counted, so the requirement completes
    only when enough grants still stand."""
    return _decide_requirement(request, command, now, ApprovalStatus.APPROVED, groups, void_grants)


def reject_requirement(
    request: MutationRequest,
    command: Command,
    now: datetime,
    *,
    groups: frozenset[str] = frozenset(),
) -> Outcome:
    """Refuse one approval requirement, which rejects the request. ``groups`` are the
    deciding actor's registered groups."""
    return _decide_requirement(request, command, now, ApprovalStatus.REJECTED, groups)


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
    # Its grants go too: they approved the stale version, and whoever gave them may grant
    # again (distinct approvers are counted over the current grants only).
    reset = tuple(
        replace(
            r,
            status=ApprovalStatus.PENDING,
            decided_at=None,
            decided_by=None,
            reason=None,
            grants=(),
        )
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


#: The rule of every command type decided on the addressed request alone: ``submit`` has no
#: request yet, ``supersede`` also judges the superseding request, and the requirement
#: commands also need the deciding actor's groups, so ``decide`` calls those itself.
RULES: dict[CommandType, Rule] = {
    CommandType.MOVE_TO_PENDING: move_to_pending,
    CommandType.APPROVE: approve,
    CommandType.REJECT: reject,
    CommandType.CANCEL: cancel,
    CommandType.EXPIRE: expire,
    CommandType.MARK_EXECUTED: mark_executed,
    CommandType.RESOLVE_VERSION: resolve_version,
}
