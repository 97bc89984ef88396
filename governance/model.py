"""The governance domain model: mutation requests, their intent, approvals and decisions.

Everything here is an immutable value. Enum values are the wire spelling of the contract
(lowercase), so ``Status.APPROVED == "approved"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Where a mutation request stands in its lifecycle (**contract**)."""

    CREATED = "created"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELED = "canceled"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    EXECUTED = "executed"


class PendingReason(StrEnum):
    """Why a pending request waits."""

    APPROVAL = "approval"
    EXTERNAL_CHECK = "external_check"
    SCHEDULE = "schedule"
    DEPENDENCY = "dependency"
    QUOTA = "quota"
    MANUAL_REVIEW = "manual_review"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class BlastScope(StrEnum):
    SINGLE = "single"
    MODULE = "module"
    SYSTEM = "system"
    GLOBAL = "global"


class ActorType(StrEnum):
    USER = "user"
    SERVICE = "service"
    SYSTEM = "system"
    SCHEDULER = "scheduler"
    ADMINISTRATOR = "administrator"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class RequirementSource(StrEnum):
    """Who asked for an approval requirement: the deployment's approval policy, or the
    requester on top of it."""

    POLICY = "policy"
    REQUESTER = "requester"


class DecisionCategory(StrEnum):
    LIFECYCLE = "lifecycle"
    APPROVAL = "approval"
    VERSION_RESOLUTION = "version_resolution"


#: The decision types each category admits.
DECISION_TYPES: dict[DecisionCategory, frozenset[str]] = {
    DecisionCategory.LIFECYCLE: frozenset(
        {"submitted", "pending", "approved", "rejected", "canceled", "expired"}
        | {"superseded", "executed"}
    ),
    DecisionCategory.APPROVAL: frozenset({"requested", "granted", "rejected", "grant_voided"}),
    DecisionCategory.VERSION_RESOLUTION: frozenset(
        {"validated", "revalidation_required", "renewed_approval_required", "rejected_as_stale"}
    ),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who issued a command or took a decision."""

    id: str
    name: str | None = None
    type: ActorType = ActorType.USER


#: The actor that takes decisions nobody issued by hand (expiry).
SYSTEM_ACTOR = Actor(id="system", name="System", type=ActorType.SYSTEM)


@dataclass(frozen=True, slots=True)
class BlastRadius:
    scope: BlastScope = BlastScope.SINGLE
    estimated_affected_count: int = 1
    description: str = ""


@dataclass(frozen=True, slots=True)
class Intent:
    """What the mutation means to do and how risky it is."""

    operation_name: str
    category: str = "general"
    description: str = ""
    risk_level: RiskLevel = RiskLevel.LOW
    is_reversible: bool = True
    blast_radius: BlastRadius = field(default_factory=BlastRadius)
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The actor that submitted the request and why."""

    actor: Actor
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """One member's grant of a group requirement."""

    actor_id: str
    decided_at: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """One approval a request pending for ``approval`` still needs (or has had).

    It names exactly one of ``approver_id`` (that actor decides it) or ``approver_group``
    (any ``min_approvals`` distinct members grant it, each grant kept in ``grants``; one
    member's rejection rejects it). ``decided_at`` / ``decided_by`` / ``reason`` say who
    settled it: the named approver, the member whose grant completed it, or the rejecter.
    ``source`` says whether the approval policy or the requester asked for it.
    """

    approval_id: str
    approver_id: str | None = None
    approver_name: str | None = None
    description: str | None = None
    step_order: int = 1
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None
    approver_group: str | None = None
    min_approvals: int = 1
    grants: tuple[Grant, ...] = ()
    source: RequirementSource = RequirementSource.REQUESTER

    def __post_init__(self) -> None:
        # A requirement nobody, or two kinds of approver, could decide would stall or
        # split the workflow; refusing it here keeps every rule from having to guess.
        if (self.approver_id is None) == (self.approver_group is None):
            raise ValueError(
                f"approval requirement {self.approval_id}: exactly one of approver_id and "
                "approver_group must be set"
            )
        if self.min_approvals < 1 or (self.approver_id is not None and self.min_approvals != 1):
            raise ValueError(
                f"approval requirement {self.approval_id}: min_approvals must be 1 for a named "
                f"approver and at least 1 for a group, got {self.min_approvals}"
            )


@dataclass(frozen=True, slots=True)
class Decision:
    """One entry of a request's append-only decision history."""

    category: DecisionCategory
    type: str
    actor: Actor
    occurred_at: datetime
    reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicyReference:
    """The approval policy a request was submitted under: its version, the sha256 of its
    document, and the rule that gave the request its requirements."""

    version: int
    sha256: str
    rule_id: str


@dataclass(frozen=True, slots=True)
class MutationRequest:
    """A governed change and where it stands.

    ``revision`` counts the commands applied to the request: a submitted request is at
    revision 1, and every applied command raises it by exactly one. ``policy`` is the
    approval policy it was submitted under (None when the requester chose its own
    requirements); its requirements keep that policy whatever is applied later.
    """

    request_id: str
    state_id: str
    state_type: str
    mutation_type: str
    intent: Intent
    context: RequestContext
    status: Status
    revision: int
    created_at: datetime
    updated_at: datetime
    pending_reason: PendingReason | None = None
    approval_requirements: tuple[ApprovalRequirement, ...] = ()
    decisions: tuple[Decision, ...] = ()
    expected_state_version: str | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    policy: PolicyReference | None = None
