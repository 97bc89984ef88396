"""The approval policy: what every request needs, decided by the deployment, not its requester.

A :class:`Policy` is an ordered list of rules; the first rule whose ``when`` matches a
request gives it its approval requirements (its steps), and the last rule has no ``when``,
so every request matches one. :mod:`governance.policy_document` reads a policy from its
document and checks its static rules; this module evaluates one: :func:`first_match` and
:func:`requirements_for` are what a submit under the policy calls, through
:func:`governance.rules.decide` and its ``policy`` argument (a :data:`PolicyMode`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from governance.commands import LATEST_TIMESTAMP, SubmitArgs
from governance.model import (
    ApprovalRequirement,
    BlastScope,
    PolicyReference,
    RequirementSource,
    RiskLevel,
)


class Attribute(StrEnum):
    """What a rule's ``when`` can name about a request."""

    MUTATION_TYPE = "mutation_type"
    STATE_TYPE = "state_type"
    RISK_LEVEL = "risk_level"
    SCOPE = "scope"
    CATEGORY = "category"
    TAGS_ANY = "tags_any"
    REQUESTER_GROUP = "requester_group"


#: The attributes a request holds a set of, which match when at least one of the set is
#: among the rule's values; every other attribute holds one value, which must be among them.
AT_LEAST_ONE: frozenset[Attribute] = frozenset({Attribute.TAGS_ANY, Attribute.REQUESTER_GROUP})
#: The attributes whose values come from an enumeration of the model, and those values.
ENUMERATED: Mapping[Attribute, tuple[str, ...]] = {
    Attribute.RISK_LEVEL: tuple(level.value for level in RiskLevel),
    Attribute.SCOPE: tuple(scope.value for scope in BlastScope),
}


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What a rule's ``when`` is matched against: the request's and its submitter's.

    A submit always has one value for each of the first five attributes (the intent's
    ``category``, ``risk_level`` and ``scope`` take their defaults when the wire leaves
    them out), and may have no tags and a submitter in no group. None stands for an
    attribute that is absent (a policy test case may leave one out): it never matches a
    ``when`` that names it, and neither does an empty set of tags or groups.
    """

    mutation_type: str | None = None
    state_type: str | None = None
    risk_level: str | None = None
    scope: str | None = None
    category: str | None = None
    tags: frozenset[str] = frozenset()
    requester_groups: frozenset[str] = frozenset()

    def value_of(self, attribute: Attribute) -> str | frozenset[str] | None:
        """The request's value for ``attribute``: a set for the at-least-one attributes."""
        if attribute is Attribute.TAGS_ANY:
            return self.tags
        if attribute is Attribute.REQUESTER_GROUP:
            return self.requester_groups
        value: str | None = getattr(self, attribute.value)
        return value


def attributes_of(args: SubmitArgs, groups: frozenset[str]) -> RequestAttributes:
    """The attributes of the request a submit with ``args`` creates, its submitter being in
    ``groups`` (as registered)."""
    intent = args.intent
    return RequestAttributes(
        mutation_type=args.mutation_type,
        state_type=args.state_type,
        risk_level=intent.risk_level.value,
        scope=intent.blast_radius.scope.value,
        category=intent.category,
        tags=frozenset(intent.tags),
        requester_groups=groups,
    )


@dataclass(frozen=True, slots=True)
class Condition:
    """One attribute of a rule's ``when`` and the values it accepts."""

    attribute: Attribute
    values: frozenset[str]

    def holds(self, attributes: RequestAttributes) -> bool:
        """Whether the request's value is among ``values`` (for a set, any one of it)."""
        value = attributes.value_of(self.attribute)
        if isinstance(value, frozenset):
            return not value.isdisjoint(self.values)
        return value is not None and value in self.values


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a rule: ``min_approvals`` members of ``group``, or the actor ``actor``."""

    group: str | None = None
    actor: str | None = None
    min_approvals: int = 1
    description: str | None = None

    def __post_init__(self) -> None:
        # The same invariant as a requirement's: a step is one kind of approver or the other.
        if (self.group is None) == (self.actor is None):
            raise ValueError("a step names exactly one of group and actor")
        if self.min_approvals < 1 or (self.actor is not None and self.min_approvals != 1):
            raise ValueError(f"a step of {self.min_approvals} approvals is not possible")

    def __str__(self) -> str:
        if self.actor is not None:
            return f"actor {self.actor}"
        plural = "s" if self.min_approvals != 1 else ""
        return f"group {self.group}, {self.min_approvals} approval{plural}"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """A rule: the requests it matches (every one when ``when`` is None) and what they need.

    ``index`` is the rule's position in the policy (0-based), for messages that point into
    the document (``rules[2]``).
    """

    id: str
    index: int
    require: tuple[Step, ...] = ()
    when: tuple[Condition, ...] | None = None
    description: str | None = None
    pending_for: timedelta | None = None

    def matches(self, attributes: RequestAttributes) -> bool:
        """Whether every attribute ``when`` names matches the request."""
        return self.when is None or all(c.holds(attributes) for c in self.when)

    def condition(self, attribute: Attribute) -> frozenset[str] | None:
        """The values ``when`` accepts for ``attribute``, or None when it does not name it."""
        for condition in self.when or ():
            if condition.attribute is attribute:
                return condition.values
        return None

    def covers(self, later: PolicyRule) -> bool:
        """Whether this rule matches every request ``later`` matches, so that placed before
        it, it leaves ``later`` nothing to match (it *shadows* it).

        Matching is a conjunction over independent attributes and every rule matches some
        request, so this holds exactly when, for each attribute this rule names, the values
        ``later`` lets through are among this rule's:

        - a one-value attribute: ``later`` names it with a subset of this rule's values.
          Not naming it lets through any value, and a value no rule lists always exists;
          except for the enumerated ``risk_level`` and ``scope``, which a submitted request
          always has, from the enumeration: there not naming it lets through the whole
          enumeration, so a rule that names all of it covers a rule that names none.
        - an at-least-one attribute (``tags_any``, ``requester_group``): ``later`` names
          it with a subset of this rule's values. A request holding just one of ``later``'s
          values matches ``later`` on it, so every one of them must be among this rule's;
          and not naming it lets through a request with no tags (or a submitter in no
          group), which this rule's condition refuses.

        So "named with a subset of its values" is exact, with that one widening for the
        enumerations: a request built from any values is a submit's.
        """
        for condition in self.when or ():
            passed = later.condition(condition.attribute)
            if passed is None and condition.attribute in ENUMERATED:
                passed = frozenset(ENUMERATED[condition.attribute])
            if passed is None or not passed <= condition.values:
                return False
        return True

    def requires(self) -> str:
        """What the rule's steps require, in words (``group sre, 2 approvals; actor x``)."""
        return "; ".join(str(step) for step in self.require) or "nothing"


#: The field of :class:`RequestAttributes` that holds each attribute's value.
_FIELDS = {
    Attribute.TAGS_ANY: "tags",
    Attribute.REQUESTER_GROUP: "requester_groups",
}


class RuleIndex:
    """Which rules each attribute value lets through, as bit sets (bit *i*: rule *i*), so
    that the first match is found with a few set operations per attribute rather than by
    trying every rule: a submit decided under a policy of hundreds of rules costs about
    what one under a policy of one does.

    For each attribute the policy names, ``open`` holds the rules whose ``when`` does not
    name it, and ``by_value`` the rules that name it with that value. A request passes an
    attribute in the rules of ``open`` and of ``by_value`` of its value (of any of its
    values, for an at-least-one attribute); the rules it matches are those it passes in
    every attribute.
    """

    __slots__ = ("_all", "_attributes", "_rules")

    def __init__(self, rules: tuple[PolicyRule, ...]) -> None:
        self._rules = rules
        self._all = (1 << len(rules)) - 1
        #: (field of the request, whether it holds a set, open rules, rules by value), for
        #: the attributes some rule names (the others let every rule through).
        self._attributes: list[tuple[str, bool, int, dict[str, int]]] = []
        for attribute in Attribute:
            open_rules = 0
            by_value: dict[str, int] = {}
            for position, rule in enumerate(rules):
                values = rule.condition(attribute)
                if values is None:
                    open_rules |= 1 << position
                    continue
                for value in values:
                    by_value[value] = by_value.get(value, 0) | 1 << position
            if by_value:
                field_name = _FIELDS.get(attribute, attribute.value)
                is_set = attribute in AT_LEAST_ONE
                self._attributes.append((field_name, is_set, open_rules, by_value))

    def first_match(self, attributes: RequestAttributes) -> PolicyRule | None:
        """The first rule that matches the request, or None when none does."""
        matching = self._all
        for field_name, is_set, open_rules, by_value in self._attributes:
            passed = open_rules
            value = getattr(attributes, field_name)
            if is_set:
                for each in value:
                    passed |= by_value.get(each, 0)
            elif value is not None:
                passed |= by_value.get(value, 0)
            matching &= passed
            if not matching:
                return None
        # The lowest bit set: the first rule, in the document's order, that matches.
        return self._rules[(matching & -matching).bit_length() - 1]


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy read from its document (see :func:`governance.policy_document.parse_policy`).

    ``document`` is the document as plain data, and ``sha256`` the hex sha256 of its RFC
    8785 canonical JSON, which names this policy whatever its spelling (key order, YAML or
    JSON, comments). The reader guarantees at least one rule, the last without ``when``.
    ``index`` is derived from the rules, once, for :func:`first_match`.
    """

    rules: tuple[PolicyRule, ...]
    document: Mapping[str, Any]
    sha256: str
    index: RuleIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", RuleIndex(self.rules))

    def rule(self, rule_id: str) -> PolicyRule:
        """The rule called ``rule_id``; KeyError for another."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def first_match(policy: Policy, attributes: RequestAttributes) -> PolicyRule:
    """The first rule of ``policy`` that matches the request: the one that decides what it
    needs (the last rule matches every request)."""
    rule = policy.index.first_match(attributes)
    # The document reader refuses a policy whose last rule has a ``when``.
    assert rule is not None, "the last rule of a policy matches every request"
    return rule


def requirements_for(rule: PolicyRule) -> tuple[ApprovalRequirement, ...]:
    """The approval requirements ``rule``'s steps give a request: step *i* (from 1) is
    ``policy-<i>`` at ``step_order`` *i*, asked for by the policy."""
    return tuple(
        ApprovalRequirement(
            approval_id=f"policy-{order}",
            approver_id=step.actor,
            approver_group=step.group,
            min_approvals=step.min_approvals,
            description=step.description,
            step_order=order,
            source=RequirementSource.POLICY,
        )
        for order, step in enumerate(rule.require, start=1)
    )


def capped_expiry(
    rule: PolicyRule, submitted_at: datetime, requested: datetime | None
) -> datetime | None:
    """When a pending request submitted at ``submitted_at`` under ``rule`` expires: the
    requester's ``requested`` expiry, but no later than ``pending_for`` after submission
    (which is also the expiry of a request that asked for none). Without ``pending_for``,
    ``requested`` as it is."""
    if rule.pending_for is None:
        return requested
    # The document reader bounds pending_for, but an instant past the last one a command may
    # name could not be stored and read back: such a cap is the last instant instead.
    room = LATEST_TIMESTAMP - submitted_at
    cap = LATEST_TIMESTAMP if rule.pending_for >= room else submitted_at + rule.pending_for
    return cap if requested is None else min(requested, cap)


# --------------------------------------------------------------------------- modes


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """Required mode with a policy applied: version ``version`` of the deployment's
    policies, compiled."""

    version: int
    policy: Policy

    @property
    def sha256(self) -> str:
        """The sha256 of the policy's document."""
        return self.policy.sha256

    def reference(self, rule: PolicyRule) -> PolicyReference:
        """What a request submitted under this policy and matched by ``rule`` carries."""
        return PolicyReference(version=self.version, sha256=self.sha256, rule_id=rule.id)


@dataclass(frozen=True, slots=True)
class NoPolicyApplied:
    """Required mode before any policy has been applied: every submit is refused."""


@dataclass(frozen=True, slots=True)
class RequesterMode:
    """Requester mode (development only): the requester's own requirements, as before any
    policy, and requests carry no policy."""


#: How a submit takes its requirements: from an applied policy, from nothing (refused), or
#: from the requester alone.
PolicyMode = ActivePolicy | NoPolicyApplied | RequesterMode

NO_POLICY_APPLIED = NoPolicyApplied()
REQUESTER_MODE = RequesterMode()
