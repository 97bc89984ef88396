"""JSON-safe dictionaries for the model and commands, in the wire spelling (ISO-8601 UTC)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from governance.commands import Command, MoveToPendingArgs, SubmitArgs
from governance.model import (
    Actor,
    ActorType,
    ApprovalRequirement,
    ApprovalStatus,
    BlastRadius,
    BlastScope,
    Decision,
    DecisionCategory,
    Grant,
    Intent,
    MutationRequest,
    PendingReason,
    PolicyReference,
    RequestContext,
    RequirementSource,
    RiskLevel,
    Status,
)


def timestamp_to_wire(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` suffix, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def timestamp_from_wire(value: str | None) -> datetime | None:
    """The instant of a wire timestamp (``Z`` or an offset), in UTC, or None."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def actor_to_dict(actor: Actor) -> dict[str, Any]:
    """An actor in the wire spelling, every field present."""
    return {"id": actor.id, "name": actor.name, "type": actor.type.value}


def actor_from_dict(data: Mapping[str, Any]) -> Actor:
    """An actor read back from its dictionary (a user without a name by default)."""
    return Actor(id=data["id"], name=data.get("name"), type=ActorType(data.get("type", "user")))


def intent_to_dict(intent: Intent) -> dict[str, Any]:
    """An intent in the wire spelling, every field present."""
    return {
        "operation_name": intent.operation_name,
        "category": intent.category,
        "description": intent.description,
        "risk_level": intent.risk_level.value,
        "is_reversible": intent.is_reversible,
        "blast_radius": {
            "scope": intent.blast_radius.scope.value,
            "estimated_affected_count": intent.blast_radius.estimated_affected_count,
            "description": intent.blast_radius.description,
        },
        "tags": list(intent.tags),
        "metadata": intent.metadata,
    }


def intent_from_dict(data: Mapping[str, Any]) -> Intent:
    """An intent read back from its dictionary, absent fields taking their defaults."""
    blast = data.get("blast_radius") or {}
    return Intent(
        operation_name=data["operation_name"],
        category=data.get("category", "general"),
        description=data.get("description", ""),
        risk_level=RiskLevel(data.get("risk_level", "low")),
        is_reversible=data.get("is_reversible", True),
        blast_radius=BlastRadius(
            scope=BlastScope(blast.get("scope", "single")),
            estimated_affected_count=blast.get("estimated_affected_count", 1),
            description=blast.get("description", ""),
        ),
        tags=tuple(data.get("tags", ())),
        metadata=dict(data.get("metadata") or {}),
    )


def grant_to_dict(grant: Grant) -> dict[str, Any]:
    """A group member's grant in the wire spelling."""
    return {
        "actor_id": grant.actor_id,
        "decided_at": timestamp_to_wire(grant.decided_at),
        "reason": grant.reason,
    }


def grant_from_dict(data: Mapping[str, Any]) -> Grant:
    """A grant read back from :func:`grant_to_dict`'s form."""
    decided_at = timestamp_from_wire(data["decided_at"])
    assert decided_at is not None
    return Grant(actor_id=data["actor_id"], decided_at=decided_at, reason=data.get("reason"))


def requirement_to_dict(requirement: ApprovalRequirement) -> dict[str, Any]:
    """A requirement as stored and as the events show it, its grants included."""
    return {
        "approval_id": requirement.approval_id,
        "approver_id": requirement.approver_id,
        "approver_group": requirement.approver_group,
        "min_approvals": requirement.min_approvals,
        "approver_name": requirement.approver_name,
        "description": requirement.description,
        "step_order": requirement.step_order,
        "status": requirement.status.value,
        "decided_at": timestamp_to_wire(requirement.decided_at),
        "decided_by": requirement.decided_by,
        "reason": requirement.reason,
        "grants": [grant_to_dict(g) for g in requirement.grants],
        "source": requirement.source.value,
    }


def requirement_from_dict(data: Mapping[str, Any]) -> ApprovalRequirement:
    """A requirement read back from :func:`requirement_to_dict`'s form.

    Rows stored before requirements could name a group have none of ``approver_group``,
    ``min_approvals`` and ``grants``: they read as a named requirement without grants.
    Rows stored before the approval policy have no ``source``: the requester asked for them.
    """
    return ApprovalRequirement(
        approval_id=data["approval_id"],
        approver_id=data.get("approver_id"),
        approver_group=data.get("approver_group"),
        min_approvals=data.get("min_approvals", 1),
        grants=tuple(grant_from_dict(g) for g in data.get("grants") or ()),
        approver_name=data.get("approver_name"),
        description=data.get("description"),
        step_order=data.get("step_order", 1),
        status=ApprovalStatus(data.get("status", "pending")),
        decided_at=timestamp_from_wire(data.get("decided_at")),
        decided_by=data.get("decided_by"),
        reason=data.get("reason"),
        source=RequirementSource(data.get("source", "requester")),
    )


def policy_reference_to_dict(reference: PolicyReference | None) -> dict[str, Any] | None:
    """The policy a request was submitted under, as events and the submitted decision show
    it, or None."""
    if reference is None:
        return None
    return {"version": reference.version, "sha256": reference.sha256, "rule_id": reference.rule_id}


def policy_reference_from_dict(data: Mapping[str, Any] | None) -> PolicyReference | None:
    """A policy reference read back from :func:`policy_reference_to_dict`'s form, or None."""
    if data is None:
        return None
    return PolicyReference(version=data["version"], sha256=data["sha256"], rule_id=data["rule_id"])


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    """A decision as stored and as the events show it."""
    return {
        "category": decision.category.value,
        "type": decision.type,
        "actor": actor_to_dict(decision.actor),
        "reason": decision.reason,
        "metadata": decision.metadata,
        "occurred_at": timestamp_to_wire(decision.occurred_at),
    }


def decision_from_dict(data: Mapping[str, Any]) -> Decision:
    """A decision read back from :func:`decision_to_dict`'s form."""
    occurred_at = timestamp_from_wire(data["occurred_at"])
    assert occurred_at is not None
    return Decision(
        category=DecisionCategory(data["category"]),
        type=data["type"],
        actor=actor_from_dict(data["actor"]),
        occurred_at=occurred_at,
        reason=data.get("reason"),
        metadata=dict(data.get("metadata") or {}),
    )


def request_to_dict(request: MutationRequest, *, with_decisions: bool = False) -> dict[str, Any]:
    """The request as the events carry it (``with_decisions`` adds the history)."""
    body: dict[str, Any] = {
        "request_id": request.request_id,
        "state_id": request.state_id,
        "state_type": request.state_type,
        "mutation_type": request.mutation_type,
        "intent": intent_to_dict(request.intent),
        "context": {
            "actor": actor_to_dict(request.context.actor),
            "reason": request.context.reason,
        },
        "status": request.status.value,
        "pending_reason": request.pending_reason.value if request.pending_reason else None,
        "approval_requirements": [requirement_to_dict(r) for r in request.approval_requirements],
        "revision": request.revision,
        "expected_state_version": request.expected_state_version,
        "expires_at": timestamp_to_wire(request.expires_at),
        "created_at": timestamp_to_wire(request.created_at),
        "updated_at": timestamp_to_wire(request.updated_at),
        "metadata": request.metadata,
        "policy": policy_reference_to_dict(request.policy),
    }
    if with_decisions:
        body["decisions"] = [decision_to_dict(d) for d in request.decisions]
    return body


def request_from_dict(data: Mapping[str, Any]) -> MutationRequest:
    """A request read back from :func:`request_to_dict`'s form (rows stored by earlier
    versions too: absent optional fields take their defaults, and a request stored before
    the approval policy has none)."""
    context = data["context"]
    created_at = timestamp_from_wire(data["created_at"])
    updated_at = timestamp_from_wire(data["updated_at"])
    assert created_at is not None and updated_at is not None
    return MutationRequest(
        request_id=data["request_id"],
        state_id=data["state_id"],
        state_type=data["state_type"],
        mutation_type=data["mutation_type"],
        intent=intent_from_dict(data["intent"]),
        context=RequestContext(
            actor=actor_from_dict(context["actor"]), reason=context.get("reason")
        ),
        status=Status(data["status"]),
        pending_reason=PendingReason(data["pending_reason"])
        if data.get("pending_reason")
        else None,
        approval_requirements=tuple(
            requirement_from_dict(r) for r in data.get("approval_requirements") or ()
        ),
        decisions=tuple(decision_from_dict(d) for d in data.get("decisions") or ()),
        revision=data["revision"],
        expected_state_version=data.get("expected_state_version"),
        expires_at=timestamp_from_wire(data.get("expires_at")),
        created_at=created_at,
        updated_at=updated_at,
        metadata=dict(data.get("metadata") or {}),
        policy=policy_reference_from_dict(data.get("policy")),
    )


def command_to_dict(command: Command) -> dict[str, Any]:
    """The wire form of a validated command; ``parse_command`` reads it back unchanged."""
    body: dict[str, Any] = {
        "command_id": command.command_id,
        "type": command.type.value,
        "request_id": command.request_id,
        "actor": {k: v for k, v in actor_to_dict(command.actor).items() if v is not None},
    }
    if command.expected_revision is not None:
        body["expected_revision"] = command.expected_revision
    if command.reason is not None:
        body["reason"] = command.reason
    if command.metadata:
        body["metadata"] = command.metadata
    args = _args_to_dict(command)
    if args:
        body["args"] = args
    if command.issued_at is not None:
        body["issued_at"] = timestamp_to_wire(command.issued_at)
    if command.audience is not None:
        body["audience"] = command.audience
    if command.auth is not None:
        body["auth"] = {"key_id": command.auth.key_id, "signature": command.auth.signature}
    return body


def _args_to_dict(command: Command) -> dict[str, Any]:
    args = command.args
    if isinstance(args, SubmitArgs):
        out: dict[str, Any] = {
            "state_id": args.state_id,
            "state_type": args.state_type,
            "mutation_type": args.mutation_type,
            "intent": intent_to_dict(args.intent),
        }
        if args.initial_status_given:
            out["initial_status"] = args.initial_status.value
        if args.pending_reason is not None:
            out["pending_reason"] = args.pending_reason.value
        if args.approval_requirements:
            out["approval_requirements"] = [
                {
                    k: v
                    for k, v in {
                        "approval_id": spec.approval_id,
                        "approver_id": spec.approver_id,
                        "approver_group": spec.approver_group,
                        # Left out at its default, so a named requirement reads as it
                        # always did on the wire.
                        "min_approvals": spec.min_approvals if spec.min_approvals != 1 else None,
                        "approver_name": spec.approver_name,
                        "description": spec.description,
                        "step_order": spec.step_order,
                    }.items()
                    if v is not None
                }
                for spec in args.approval_requirements
            ]
        if args.expected_state_version is not None:
            out["expected_state_version"] = args.expected_state_version
        if args.expires_at is not None:
            out["expires_at"] = timestamp_to_wire(args.expires_at)
        if args.metadata:
            out["metadata"] = args.metadata
        return out
    if isinstance(args, MoveToPendingArgs):
        out = {"pending_reason": args.pending_reason.value}
        if args.expires_at is not None:
            out["expires_at"] = timestamp_to_wire(args.expires_at)
        return out
    # The other args are msgspec models that are their own wire form.
    built: dict[str, Any] = msgspec.to_builtins(args)
    return built
