"""A policy's own test cases (``governance policy check --cases``): reading them, and
running them against a policy with the requesters' groups from a roster."""

from __future__ import annotations

import pytest

from governance.policy_document import PolicyError, parse_policy
from governance.satisfiability import RosterActor
from governance_cli.policy_cases import failing_cases, parse_cases

POLICY = parse_policy(
    """
policy: 1
rules:
  - id: contractors
    when: {requester_group: [contractors]}
    require: [{group: cab, min_approvals: 2}]
  - id: critical-accounts
    when: {state_type: [account], risk_level: [high, critical], tags_any: [pci]}
    require: [{group: sre}]
  - id: default
    require: [{group: cab}]
"""
)
ROSTER = [
    RosterActor("ci", roles=frozenset({"requester"})),
    RosterActor("temp", roles=frozenset({"requester"}), groups=frozenset({"contractors"})),
]


def test_every_case_matching_its_expected_rule_passes() -> None:
    cases = parse_cases(
        """
- name: a contractor's change
  request: {mutation_type: update, requester: temp}
  expect: {rule: contractors}
- request:
    mutation_type: raise-limit
    state_type: account
    risk_level: critical
    scope: global
    category: payments
    tags: [pci, sox]
    requester: ci
  expect: {rule: critical-accounts}
- request: {state_type: account, risk_level: critical, requester: ci}
  expect: {rule: default}
"""
    )

    assert failing_cases(POLICY, cases, ROSTER) == []


def test_a_case_matching_another_rule_fails_naming_it_and_both_rules() -> None:
    cases = parse_cases(
        """
- request: {state_type: account, risk_level: high, tags: [pci]}
  expect: {rule: critical-accounts}
- name: no tags, no pci
  request: {state_type: account, risk_level: high}
  expect: {rule: critical-accounts}
"""
    )

    (failure,) = failing_cases(POLICY, cases, ROSTER)

    assert str(failure) == (
        "cases[1] (no tags, no pci): expected rule critical-accounts, but rule default matches"
    )


def test_the_requesters_groups_come_from_the_roster() -> None:
    # The same request, by a contractor and by a requester the roster does not know
    cases = parse_cases(
        """
- request: {mutation_type: update, requester: temp}
  expect: {rule: contractors}
- request: {mutation_type: update, requester: stranger}
  expect: {rule: contractors}
"""
    )

    (failure,) = failing_cases(POLICY, cases, ROSTER)

    assert failure.case.where == "cases[1]" and failure.actual_rule == "default"


def test_a_case_expecting_a_rule_the_policy_does_not_have_is_an_error() -> None:
    cases = parse_cases("- {request: {}, expect: {rule: critical}}")

    with pytest.raises(PolicyError) as refused:
        failing_cases(POLICY, cases, ROSTER)

    assert refused.value.problems == (
        "cases[0].expect.rule: 'critical' is not a rule of the policy (its rules: "
        "contractors, critical-accounts, default)",
    )


def test_a_malformed_cases_file_names_every_problem_where_it_is() -> None:
    with pytest.raises(PolicyError) as refused:
        parse_cases(
            """
- request: {mutation_type: 12, colour: red, risk_level: extreme, tags: pci}
  expect: {rule: default, why: because}
- request: {scope: galaxy}
- just a string
- {request: [], expect: {rule: default}, name: 3}
"""
        )

    assert refused.value.problems == (
        "cases[0].request.colour: unknown field; expected one of mutation_type, state_type, "
        "risk_level, scope, category, tags, requester",
        "cases[0].request.mutation_type: expected a string, got int (quote it to make it a string)",
        "cases[0].request.risk_level: 'extreme' is not one of low, medium, high, critical",
        "cases[0].request.tags: expected a list of strings",
        "cases[0].expect.why: unknown field; expected one of rule",
        "cases[1].request.scope: 'galaxy' is not one of single, module, system, global",
        "cases[1].expect: expected a mapping with the rule expected",
        "cases[2]: expected a mapping with request and expect",
        "cases[3].name: expected a string",
        "cases[3].request: expected a mapping of the request's attributes",
    )


@pytest.mark.parametrize("text", ["[]", "{}", "cases: []", "- a: [b"])
def test_a_file_that_is_no_list_of_cases_is_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_cases(text)


def test_a_case_without_an_expected_rule_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"cases\[0\].expect.rule: required"):
        parse_cases("- {request: {}, expect: {}}")
