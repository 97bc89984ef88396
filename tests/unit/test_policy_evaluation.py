"""Evaluating an approval policy: the attributes of a submit, the first rule that matches them,
the requirements its steps give, and the expiry its ``pending_for`` caps."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from governance.commands import LATEST_TIMESTAMP, SubmitArgs, parse_command
from governance.model import ApprovalRequirement, RequirementSource
from governance.policy import (
    ActivePolicy,
    Policy,
    PolicyRule,
    RequestAttributes,
    attributes_of,
    capped_expiry,
    first_match,
    requirements_for,
)
from governance.policy_document import policy_from_document

from .builders import LATER, NOW, POLICY, intent_payload, submit_payload

#: A request that only the catch-all rule matches.
PLAIN = RequestAttributes(
    mutation_type="update",
    state_type="service-config",
    risk_level="low",
    scope="module",
    category="general",
)


def matched(**changes: Any) -> str:
    return first_match(POLICY, replace(PLAIN, **changes)).id


def test_the_attributes_of_a_submit_are_its_types_its_intent_and_the_submitters_groups() -> None:
    payload = submit_payload(
        mutation_type="raise-limit",
        state_type="account",
        intent=intent_payload(
            category="payments",
            risk_level="critical",
            blast_radius={"scope": "global"},
            tags=["pci", "q4"],
        ),
    )
    args = parse_command(payload).args
    assert isinstance(args, SubmitArgs)

    attributes = attributes_of(args, frozenset({"contractors"}))

    assert attributes == RequestAttributes(
        mutation_type="raise-limit",
        state_type="account",
        risk_level="critical",
        scope="global",
        category="payments",
        tags=frozenset({"pci", "q4"}),
        requester_groups=frozenset({"contractors"}),
    )


def test_a_submit_leaving_out_the_intents_defaults_has_them_as_attributes() -> None:
    args = parse_command(submit_payload(intent={"operation_name": "noop"})).args
    assert isinstance(args, SubmitArgs)

    attributes = attributes_of(args, frozenset())

    assert (attributes.category, attributes.risk_level, attributes.scope) == (
        "general",
        "low",
        "single",
    )
    assert attributes.tags == attributes.requester_groups == frozenset()


def test_a_request_no_rule_names_matches_the_catch_all() -> None:
    assert matched() == "default"


def test_every_attribute_a_when_names_must_match() -> None:
    assert matched(state_type="account", risk_level="critical") == "critical-accounts"
    assert matched(state_type="account", risk_level="medium") == "default"
    assert matched(state_type="ledger", risk_level="critical") == "default"


def test_the_first_matching_rule_wins() -> None:
    # A critical account change tagged pci by a contractor matches three rules
    attributes = replace(
        PLAIN,
        state_type="account",
        risk_level="high",
        tags=frozenset({"pci"}),
        requester_groups=frozenset({"contractors"}),
    )

    assert first_match(POLICY, attributes).id == "critical-accounts"
    assert first_match(POLICY, replace(attributes, risk_level="low")).id == "compliance"
    assert first_match(POLICY, replace(attributes, risk_level="low", tags=frozenset())).id == (
        "contractors"
    )


def test_tags_any_matches_when_at_least_one_tag_is_listed() -> None:
    assert matched(tags=frozenset({"q4", "sox"})) == "compliance"
    assert matched(tags=frozenset({"q4"})) == "default"


def test_requester_group_matches_when_the_submitter_is_in_at_least_one_listed_group() -> None:
    assert matched(requester_groups=frozenset({"sre", "interns"})) == "contractors"
    assert matched(requester_groups=frozenset({"sre"})) == "default"


@pytest.mark.parametrize("absent", ["category", "scope"])
def test_an_absent_attribute_never_matches_a_when_that_names_it(absent: str) -> None:
    docs = replace(PLAIN, category="docs")
    assert first_match(POLICY, docs).id == "docs"

    without: dict[str, Any] = {absent: None}
    assert first_match(POLICY, replace(docs, **without)).id == "default"


def test_no_tags_and_no_groups_never_match_tags_any_or_requester_group() -> None:
    assert matched(tags=frozenset(), requester_groups=frozenset()) == "default"


def test_a_rule_steps_become_policy_requirements_in_order() -> None:
    requirements = requirements_for(POLICY.rule("critical-accounts"))

    assert requirements == (
        ApprovalRequirement(
            approval_id="policy-1",
            approver_group="sre",
            min_approvals=2,
            description="Two SREs",
            step_order=1,
            source=RequirementSource.POLICY,
        ),
        ApprovalRequirement(
            approval_id="policy-2",
            approver_id="sec-officer",
            step_order=2,
            source=RequirementSource.POLICY,
        ),
    )


def test_a_rule_requiring_nothing_gives_no_requirements() -> None:
    assert requirements_for(POLICY.rule("docs")) == ()


def test_a_rule_says_what_it_requires_in_words() -> None:
    assert (
        POLICY.rule("critical-accounts").requires() == "group sre, 2 approvals; actor sec-officer"
    )
    assert POLICY.rule("default").requires() == "group cab, 1 approval"
    assert POLICY.rule("docs").requires() == "nothing"


def test_an_unknown_rule_id_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        POLICY.rule("nope")


def test_an_active_policy_references_its_version_sha256_and_the_rule() -> None:
    active = ActivePolicy(version=4, policy=POLICY)

    reference = active.reference(POLICY.rule("docs"))

    assert (reference.version, reference.sha256, reference.rule_id) == (4, POLICY.sha256, "docs")
    assert active.sha256 == POLICY.sha256


# --------------------------------------------------------------------------- pending_for


def capped(policy_rule: PolicyRule) -> Any:
    return lambda requested: capped_expiry(policy_rule, NOW, requested)


def test_pending_for_is_the_expiry_of_a_request_that_asks_for_none() -> None:
    assert capped(POLICY.rule("critical-accounts"))(None) == NOW + timedelta(hours=72)


def test_pending_for_caps_a_later_expiry() -> None:
    assert capped(POLICY.rule("critical-accounts"))(NOW + timedelta(days=30)) == NOW + timedelta(
        hours=72
    )


def test_a_requester_may_ask_for_less_than_pending_for() -> None:
    assert capped(POLICY.rule("critical-accounts"))(LATER) == LATER


def test_without_pending_for_the_requested_expiry_stands() -> None:
    assert capped(POLICY.rule("compliance"))(LATER) == LATER
    assert capped(POLICY.rule("compliance"))(None) is None


def test_a_cap_past_the_last_instant_a_request_may_name_is_that_instant() -> None:
    policy: Policy = policy_from_document(
        {"policy": 1, "rules": [{"id": "d", "require": [], "pending_for": "36500d"}]}
    )

    cap = capped_expiry(policy.rules[0], LATEST_TIMESTAMP - timedelta(days=1), None)

    assert cap == LATEST_TIMESTAMP
