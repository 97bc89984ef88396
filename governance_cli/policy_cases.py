"""A policy's own tests: ``governance policy check FILE --cases CASES.yaml``.

A cases file is a YAML (or JSON) list; each case describes a request and the rule the policy
must choose for it::

    - name: a critical limit raise needs SRE and security     # optional
      request:
        mutation_type: raise-limit
        state_type: account
        risk_level: critical
        scope: global
        category: payments
        tags: [pci]
        requester: carol          # the requester's groups come from the roster
      expect:
        rule: critical-accounts

Every attribute of ``request`` is optional: an absent one never matches a ``when`` that
names it (a requester the roster does not know is in no group). :func:`parse_cases` reads
the file, refusing what is not a case (:class:`PolicyError`, each problem naming where), and
:func:`failing_cases` runs the cases against a policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from governance.policy import ENUMERATED, Attribute, Policy, RequestAttributes, first_match
from governance.policy_document import PolicyError, load_document
from governance.satisfiability import RosterActor

CASE_FIELDS = ("name", "request", "expect")
REQUEST_FIELDS = (
    "mutation_type",
    "state_type",
    "risk_level",
    "scope",
    "category",
    "tags",
    "requester",
)
EXPECT_FIELDS = ("rule",)


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One case: a request (its submitter by id) and the rule it must match."""

    where: str
    name: str | None
    attributes: RequestAttributes
    requester: str | None
    expected_rule: str

    @property
    def label(self) -> str:
        """How messages name the case: where it is, and its name if it has one."""
        return f"{self.where} ({self.name})" if self.name else self.where


@dataclass(frozen=True, slots=True)
class CaseFailure:
    """A case the policy does not match as expected."""

    case: PolicyCase
    actual_rule: str

    def __str__(self) -> str:
        return (
            f"{self.case.label}: expected rule {self.case.expected_rule}, "
            f"but rule {self.actual_rule} matches"
        )


def parse_cases(text: str | bytes) -> list[PolicyCase]:
    """The cases a YAML or JSON document lists, or :class:`PolicyError` naming every
    problem."""
    document = load_document(text)
    problems: list[str] = []
    if not isinstance(document, list) or not document:
        raise PolicyError(["cases: expected a non-empty list of cases"])
    cases = []
    for index, raw in enumerate(document):
        case = _case(raw, f"cases[{index}]", problems)
        if case is not None:
            cases.append(case)
    if problems:
        raise PolicyError(problems)
    return cases


def failing_cases(
    policy: Policy, cases: Iterable[PolicyCase], roster: Iterable[RosterActor]
) -> list[CaseFailure]:
    """The cases whose request ``policy`` matches with another rule than expected, each
    requester in the groups ``roster`` gives it. :class:`PolicyError` when a case expects a
    rule the policy does not have."""
    groups = {actor.actor_id: actor.groups for actor in roster}
    ids = {rule.id for rule in policy.rules}
    listed = list(cases)
    unknown = [
        f"{case.where}.expect.rule: {case.expected_rule!r} is not a rule of the policy "
        f"(its rules: {', '.join(rule.id for rule in policy.rules)})"
        for case in listed
        if case.expected_rule not in ids
    ]
    if unknown:
        raise PolicyError(unknown)
    failures = []
    for case in listed:
        attributes = RequestAttributes(
            mutation_type=case.attributes.mutation_type,
            state_type=case.attributes.state_type,
            risk_level=case.attributes.risk_level,
            scope=case.attributes.scope,
            category=case.attributes.category,
            tags=case.attributes.tags,
            requester_groups=groups.get(case.requester or "", frozenset()),
        )
        actual = first_match(policy, attributes).id
        if actual != case.expected_rule:
            failures.append(CaseFailure(case, actual))
    return failures


def _case(raw: object, where: str, problems: list[str]) -> PolicyCase | None:
    before = len(problems)
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping with request and expect")
        return None
    _unknown(raw, CASE_FIELDS, where, problems)
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        problems.append(f"{where}.name: expected a string")
    request = raw.get("request")
    if not isinstance(request, Mapping):
        problems.append(f"{where}.request: expected a mapping of the request's attributes")
        request = {}
    _unknown(request, REQUEST_FIELDS, f"{where}.request", problems)
    values = {
        field: _string(request, field, f"{where}.request", problems)
        for field in REQUEST_FIELDS
        if field != "tags"
    }
    for attribute in (Attribute.RISK_LEVEL, Attribute.SCOPE):
        value = values[attribute.value]
        if value is not None and value not in ENUMERATED[attribute]:
            problems.append(
                f"{where}.request.{attribute.value}: {value!r} is not one of "
                f"{', '.join(ENUMERATED[attribute])}"
            )
    tags = request.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        problems.append(f"{where}.request.tags: expected a list of strings")
        tags = []
    expect = raw.get("expect")
    rule = None
    if not isinstance(expect, Mapping):
        problems.append(f"{where}.expect: expected a mapping with the rule expected")
    else:
        _unknown(expect, EXPECT_FIELDS, f"{where}.expect", problems)
        rule = _string(expect, "rule", f"{where}.expect", problems)
        if rule is None and "rule" not in expect:
            problems.append(f"{where}.expect.rule: required (the id of the rule expected)")
    if len(problems) > before or rule is None:
        return None
    return PolicyCase(
        where=where,
        name=name,
        attributes=RequestAttributes(
            mutation_type=values["mutation_type"],
            state_type=values["state_type"],
            risk_level=values["risk_level"],
            scope=values["scope"],
            category=values["category"],
            tags=frozenset(tags),
        ),
        requester=values["requester"],
        expected_rule=rule,
    )


def _string(raw: Mapping[str, Any], field: str, where: str, problems: list[str]) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(
            f"{where}.{field}: expected a string, got {type(value).__name__} "
            "(quote it to make it a string)"
        )
        return None
    return value


def _unknown(
    raw: Mapping[Any, Any], known: tuple[str, ...], where: str, problems: list[str]
) -> None:
    for key in raw:
        if key not in known:
            problems.append(f"{where}.{key}: unknown field; expected one of {', '.join(known)}")
