"""Builders shared by the unit tests: valid command payloads, parsed commands, and mutation
requests constructed directly in any status.

Every builder returns a fresh object, so a test may change what it gets without touching
any other test.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from governance.commands import Command, parse_command
from governance.model import (
    Actor,
    ApprovalRequirement,
    ApprovalStatus,
    Decision,
    DecisionCategory,
    Grant,
    Intent,
    MutationRequest,
    PendingReason,
    RequestContext,
    Status,
)
from governance.policy_document import parse_policy
from governance.rules import Applied, Outcome, Rejection, decide

NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=1)
LATER = NOW + timedelta(hours=1)
REQUEST_ID = "req-42"
#: The request a ``supersede`` names unless told otherwise.
SUPERSEDING_ID = "req-43"
#: The actor commands come from unless told otherwise, and so the submitter of every request
#: a test submits: never one of the approvers below, whom the submitter could not stand for.
OPERATOR = "operator"
#: The submitter of every request :func:`request_in_status` builds.
SUBMITTER = "submitter"

#: The args each non-submit command needs to be valid.
DEFAULT_ARGS: dict[str, dict[str, Any]] = {
    "move_to_pending": {"pending_reason": "manual_review"},
    "approve": {},
    "reject": {},
    "cancel": {},
    "expire": {},
    "supersede": {"superseding_request_id": SUPERSEDING_ID},
    "mark_executed": {},
    "approve_requirement": {"approval_id": "approval-1"},
    "reject_requirement": {"approval_id": "approval-1"},
    "resolve_version": {"current_state_version": "v2", "strategy": "reject_stale"},
}

NON_SUBMIT_TYPES: tuple[str, ...] = tuple(DEFAULT_ARGS)
ALL_TYPES: tuple[str, ...] = ("submit", *NON_SUBMIT_TYPES)


# --------------------------------------------------------------------------- payloads


def actor_payload(actor_id: str = OPERATOR, actor_type: str = "user") -> dict[str, Any]:
    return {"id": actor_id, "name": actor_id.title(), "type": actor_type}


def intent_payload(**overrides: Any) -> dict[str, Any]:
    intent: dict[str, Any] = {
        "operation_name": "rotate-signing-keys",
        "category": "security",
        "description": "Rotate the signing keys of the billing service",
        "risk_level": "high",
        "is_reversible": False,
        "blast_radius": {
            "scope": "module",
            "estimated_affected_count": 12,
            "description": "billing",
        },
        "tags": ["keys", "billing"],
        "metadata": {"ticket": "SEC-101"},
    }
    intent.update(overrides)
    return intent


def submit_payload(
    *,
    request_id: str = REQUEST_ID,
    command_id: str = "cmd-submit",
    actor_id: str = OPERATOR,
    **args_overrides: Any,
) -> dict[str, Any]:
    """A valid ``submit`` command; keyword arguments replace or add ``args`` fields."""
    args: dict[str, Any] = {
        "state_id": "state-7",
        "state_type": "service-config",
        "mutation_type": "update",
        "intent": intent_payload(),
    }
    args.update(args_overrides)
    return {
        "command_id": command_id,
        "type": "submit",
        "request_id": request_id,
        "actor": actor_payload(actor_id),
        "args": args,
    }


def command_payload(
    type_: str,
    *,
    expected_revision: int | None = 1,
    actor_id: str = OPERATOR,
    request_id: str = REQUEST_ID,
    command_id: str | None = None,
    reason: str | None = None,
    **args_overrides: Any,
) -> dict[str, Any]:
    """A valid non-submit command; keyword arguments replace or add ``args`` fields."""
    payload: dict[str, Any] = {
        "command_id": command_id or f"cmd-{type_}",
        "type": type_,
        "request_id": request_id,
        "actor": actor_payload(actor_id),
    }
    if expected_revision is not None:
        payload["expected_revision"] = expected_revision
    if reason is not None:
        payload["reason"] = reason
    args = {**DEFAULT_ARGS[type_], **args_overrides}
    if args:
        payload["args"] = args
    return payload


def command(
    type_: str,
    expected_revision: int,
    *,
    actor_id: str = OPERATOR,
    reason: str | None = None,
    request_id: str = REQUEST_ID,
    **args_overrides: Any,
) -> Command:
    return parse_command(
        command_payload(
            type_,
            expected_revision=expected_revision,
            actor_id=actor_id,
            reason=reason,
            request_id=request_id,
            **args_overrides,
        )
    )


THREE_APPROVERS: list[dict[str, Any]] = [
    {"approval_id": "alice-1", "approver_id": "alice", "step_order": 1},
    {"approval_id": "bob-2", "approver_id": "bob", "step_order": 2},
    {"approval_id": "carol-2", "approver_id": "carol", "step_order": 2},
]

#: The group every group requirement of the tests names, and who is in it.
CAB = "cab"
CAB_MEMBERS: tuple[str, ...] = ("alice", "bob", "carol")
#: Each actor's registered groups, as the worker would read them from the registry.
GROUPS: dict[str, frozenset[str]] = {
    "alice": frozenset({CAB}),
    "bob": frozenset({CAB, "ops"}),
    "carol": frozenset({CAB}),
    "dave": frozenset({"ops"}),
    OPERATOR: frozenset(),
}


def groups_of(actor_id: str) -> frozenset[str]:
    """The groups ``actor_id`` is registered in (none for an unregistered actor)."""
    return GROUPS.get(actor_id, frozenset())


#: The approval policy the policy tests evaluate and submit under.
POLICY = parse_policy(
    """\
policy: 1
rules:
  - id: critical-accounts
    when: {state_type: [account], risk_level: [high, critical]}
    require:
      - {group: sre, min_approvals: 2, description: Two SREs}
      - {actor: sec-officer}
    pending_for: 72h
  - id: compliance
    when: {tags_any: [pci, sox]}
    require: [{group: compliance}]
  - id: contractors
    when: {requester_group: [contractors, interns]}
    require: [{group: leads}]
  - id: docs
    when: {category: [docs], scope: [single, module]}
    require: []
    pending_for: 1h
  - id: default
    require: [{group: cab}]
"""
)


# --------------------------------------------------------------------------- requests


def requirement(
    approval_id: str,
    approver_id: str,
    step_order: int = 1,
    status: ApprovalStatus = ApprovalStatus.PENDING,
) -> ApprovalRequirement:
    """A requirement for the named ``approver_id``, decided by them unless pending."""
    decided = status is not ApprovalStatus.PENDING
    return ApprovalRequirement(
        approval_id=approval_id,
        approver_id=approver_id,
        approver_name=approver_id.title(),
        step_order=step_order,
        status=status,
        decided_at=EARLIER if decided else None,
        decided_by=approver_id if decided else None,
        reason="checked" if decided else None,
    )


def group_requirement(
    approval_id: str,
    group: str = CAB,
    min_approvals: int = 2,
    step_order: int = 1,
    granted_by: tuple[str, ...] = (),
) -> ApprovalRequirement:
    """A requirement for ``min_approvals`` members of ``group``, holding the grants of
    ``granted_by``: approved by the last of them once there are enough."""
    grants = tuple(Grant(actor_id, EARLIER, "checked") for actor_id in granted_by)
    done = len(grants) >= min_approvals
    return ApprovalRequirement(
        approval_id=approval_id,
        approver_group=group,
        min_approvals=min_approvals,
        step_order=step_order,
        grants=grants,
        status=ApprovalStatus.APPROVED if done else ApprovalStatus.PENDING,
        decided_at=EARLIER if done else None,
        decided_by=granted_by[-1] if done else None,
        reason="checked" if done else None,
    )


def request_in_status(
    status: Status,
    *,
    revision: int = 3,
    pending_reason: PendingReason | None = None,
    expires_at: datetime | None = None,
    requirements: tuple[ApprovalRequirement, ...] = (),
    expected_state_version: str | None = None,
    request_id: str = REQUEST_ID,
) -> MutationRequest:
    """A request constructed directly in ``status``.

    A pending request waits for ``manual_review`` until ``LATER`` unless told otherwise; any
    other status has neither a pending reason nor an expiry.
    """
    if status is Status.PENDING:
        pending_reason = pending_reason or PendingReason.MANUAL_REVIEW
        expires_at = expires_at or LATER
    submitter = Actor(id=SUBMITTER)
    history = [Decision(DecisionCategory.LIFECYCLE, "submitted", submitter, EARLIER)]
    if status is not Status.CREATED:
        history.append(Decision(DecisionCategory.LIFECYCLE, status.value, submitter, EARLIER))
    return MutationRequest(
        request_id=request_id,
        state_id="state-7",
        state_type="service-config",
        mutation_type="update",
        intent=Intent(operation_name="rotate-signing-keys"),
        context=RequestContext(actor=submitter, reason="routine"),
        status=status,
        revision=revision,
        created_at=EARLIER,
        updated_at=EARLIER,
        pending_reason=pending_reason,
        approval_requirements=requirements,
        decisions=tuple(history),
        expected_state_version=expected_state_version,
        expires_at=expires_at,
        metadata={"origin": "unit-test"},
    )


def superseding_request(
    status: Status = Status.APPROVED, *, request_id: str = SUPERSEDING_ID
) -> MutationRequest:
    """The request a ``supersede`` names, as the worker would lock it: live unless told
    otherwise."""
    return request_in_status(status, revision=1, request_id=request_id)


# --------------------------------------------------------------------------- outcomes


def applied(outcome: Outcome) -> Applied:
    assert isinstance(outcome, Applied), f"expected the command to be applied, got {outcome}"
    return outcome


def rejected(outcome: Outcome) -> Rejection:
    assert isinstance(outcome, Rejection), f"expected a rejection, got {outcome}"
    return outcome


def submitted(payload: dict[str, Any] | None = None) -> MutationRequest:
    """The request a valid submit creates."""
    return applied(decide(None, parse_command(payload or submit_payload()), NOW)).request


def issue(
    request: MutationRequest,
    type_: str,
    *,
    actor_id: str = OPERATOR,
    reason: str | None = None,
    superseding: MutationRequest | None = None,
    groups: frozenset[str] | None = None,
    void_grants: Mapping[tuple[str, str], str] | None = None,
    **args: Any,
) -> Outcome:
    """Decide ``type_`` against ``request`` with the right expected revision.

    ``superseding`` is what the worker would have locked for a ``supersede``: a test that
    supersedes passes one (see :func:`superseding_request`), or means it does not exist.
    ``groups`` are the actor's registered groups: :data:`GROUPS`' unless told otherwise.
    """
    cmd = command(
        type_,
        request.revision,
        actor_id=actor_id,
        reason=reason,
        request_id=request.request_id,
        **args,
    )
    return decide(
        request,
        cmd,
        NOW,
        superseding,
        groups=groups_of(actor_id) if groups is None else groups,
        void_grants=void_grants or {},
    )


def kinds(decisions: tuple[Decision, ...]) -> list[str]:
    """Decisions as ``category.type`` strings, in order."""
    return [f"{d.category.value}.{d.type}" for d in decisions]


def valid_commands() -> dict[str, dict[str, Any]]:
    """One valid, fully populated command payload of each of the eleven types, by type."""
    commands: dict[str, dict[str, Any]] = {
        "submit": submit_payload(
            approval_requirements=[
                {"approver_id": "alice", "approver_name": "Alice", "description": "security"},
                {"approval_id": "bob-2", "approver_id": "bob", "step_order": 2},
                {
                    "approval_id": "cab-3",
                    "approver_group": "cab",
                    "min_approvals": 2,
                    "step_order": 3,
                },
            ],
            expected_state_version="v1",
            expires_at="2026-12-01T00:00:00+02:00",
            metadata={"pipeline": {"stage": 3, "ok": True, "ratio": 0.5, "none": None}},
        ),
        **{type_: command_payload(type_, expected_revision=7) for type_ in NON_SUBMIT_TYPES},
    }
    commands["move_to_pending"]["args"]["expires_at"] = "2026-12-01T00:00:00Z"
    for payload in commands.values():
        payload.update(
            reason="routine change",
            metadata={"ticket": "OPS-1", "labels": ["a", "b"]},
            issued_at="2026-11-28T14:00:00.123456Z",
            audience="governance",
            auth={"key_id": "operator-key-1", "signature": SIGNATURE},
        )
    return commands


#: A signature of the right form (validation never checks it against anything).
SIGNATURE = "A" * 85 + "g"
