"""Satisfiable by construction: every rule can be met by distinct eligible approvers other
than its submitter, for every submitter who can reach it and for an outsider; a shortfall
names the rule, the submitter and what is missing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from governance.policy_document import parse_policy
from governance.satisfiability import (
    RosterActor,
    parse_roster,
    reachable,
    roster_actor_from_dict,
    rule_shortfall,
    unsatisfiable,
)

REQUESTER = frozenset({"requester"})
APPROVER = frozenset({"approver"})
BOTH = REQUESTER | APPROVER

POLICY = parse_policy(
    """\
policy: 1
rules:
  - id: critical-accounts
    when: {state_type: [account], requester_group: [contractors]}
    require:
      - {group: sre, min_approvals: 2}
      - {actor: sec-officer}
  - id: default
    require: [{group: cab}]
"""
)


def actor(
    actor_id: str, *groups: str, roles: frozenset[str] = APPROVER, **facts: Any
) -> RosterActor:
    return RosterActor(actor_id=actor_id, roles=roles, groups=frozenset(groups), **facts)


#: A roster that satisfies POLICY for everyone.
ROSTER = [
    actor("alice", "sre", "contractors", roles=BOTH),
    actor("bob", "sre"),
    actor("erin", "sre"),
    actor("sec-officer", "sec"),
    actor("carol", "cab"),
    actor("dave", "cab", roles=REQUESTER),
    actor("frank", "cab"),
]


def messages(policy_text: str, roster: list[RosterActor]) -> list[str]:
    return [str(s) for s in unsatisfiable(parse_policy(policy_text), roster)]


def test_a_roster_with_enough_distinct_approvers_satisfies_the_policy() -> None:
    assert unsatisfiable(POLICY, ROSTER) == ()


def test_an_approver_in_two_steps_counts_once() -> None:
    # Given the security officer is also one of the SREs, and bob the only other one
    roster = [
        actor("alice", "sre", "contractors", roles=BOTH),
        actor("bob", "sre"),
        actor("sec-officer", "sre"),
        *ROSTER[4:],
    ]

    # Then two SREs and the security officer are three places for only two people
    assert [str(s) for s in unsatisfiable(POLICY, roster)] == [
        "rule critical-accounts: for submitter alice, step 1 (group sre, 2 approvals) and "
        "step 2 (actor sec-officer) need 3 distinct eligible approvers other than alice; only "
        "2 can be matched: bob, sec-officer"
    ]


def test_the_submitter_is_never_one_of_its_approvers() -> None:
    # Given carol, a requester, is the only approver of cab
    text = "policy: 1\nrules: [{id: d, require: [{group: cab}]}]"
    roster = [actor("carol", "cab", roles=BOTH)]

    # Then carol's own requests lack an approver, and an outsider's do not
    assert [(s.rule_id, s.submitter) for s in unsatisfiable(parse_policy(text), roster)] == [
        ("d", "carol")
    ]
    # And with frank in cab too, carol's requests have him
    assert messages(text, [*roster, actor("frank", "cab")]) == []


def test_a_shortfall_names_the_rule_the_submitter_and_what_is_missing() -> None:
    text = "policy: 1\nrules: [{id: pairs, require: [{group: cab, min_approvals: 2}]}]"
    roster = [actor("carol", "cab", roles=BOTH), actor("frank", "cab")]

    assert messages(text, roster) == [
        "rule pairs: for submitter carol, step 1 (group cab, 2 approvals) needs 2 distinct "
        "eligible approvers other than carol; only 1 can be matched: frank"
    ]


def test_a_shortfall_for_an_outsider_says_so() -> None:
    text = "policy: 1\nrules: [{id: d, require: [{group: cab}]}]"

    assert messages(text, []) == [
        "rule d: for an outsider, step 1 (group cab, 1 approval) needs 1 distinct eligible "
        "approver; none can be matched"
    ]


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        ({"active": False}, "inactive"),
        ({"roles": frozenset()}, "no role approver"),
        ({"has_key": False}, "no unrevoked key"),
        ({"active": False, "has_key": False}, "inactive, no unrevoked key"),
    ],
    ids=["inactive", "not-an-approver", "no-key", "inactive-without-key"],
)
def test_an_approver_must_be_active_hold_the_role_and_an_unrevoked_key(
    facts: dict[str, Any], why: str
) -> None:
    text = "policy: 1\nrules: [{id: d, require: [{group: cab}]}]"
    roster = [actor("carol", "cab", **{"roles": APPROVER, **facts})]

    assert messages(text, roster) == [
        "rule d: for an outsider, step 1 (group cab, 1 approval) needs 1 distinct eligible "
        f"approver; none can be matched; not eligible: carol ({why})"
    ]


def test_a_named_actor_the_registry_does_not_know_is_said_so() -> None:
    text = "policy: 1\nrules: [{id: d, require: [{actor: ghost}]}]"

    assert messages(text, []) == [
        "rule d: for an outsider, step 1 (actor ghost) needs 1 distinct eligible approver; "
        "none can be matched; not eligible: ghost (not registered)"
    ]


def test_a_rule_requiring_nothing_is_satisfiable() -> None:
    assert messages("policy: 1\nrules: [{id: free, require: []}]", []) == []


def test_shortfalls_come_in_rule_order_an_outsider_first_then_submitters_by_id() -> None:
    text = """\
policy: 1
rules:
  - {id: first, when: {category: [x]}, require: [{actor: nobody}]}
  - {id: second, require: [{group: cab, min_approvals: 3}]}
"""
    roster = [actor("zed", roles=REQUESTER), actor("amy", "cab", roles=BOTH)]

    assert [(s.rule_id, s.submitter) for s in unsatisfiable(parse_policy(text), roster)] == [
        ("first", None),
        ("first", "amy"),
        ("first", "zed"),
        ("second", None),
        ("second", "amy"),
        ("second", "zed"),
    ]


# --------------------------------------------------------------------------- who submits


@pytest.mark.parametrize(
    ("roles", "active", "submits"),
    [(REQUESTER, True, True), (REQUESTER, False, False), (APPROVER, True, False)],
    ids=["active-requester", "inactive-requester", "not-a-requester"],
)
def test_only_active_requesters_are_submitters(
    roles: frozenset[str], active: bool, submits: bool
) -> None:
    # Given nobody can approve the contractors' rule, and dave is the only contractor
    roster = [
        actor("dave", "contractors", roles=roles, active=active),
        actor("carol", "cab"),
        actor("frank", "cab"),
    ]

    shortfalls = unsatisfiable(POLICY, roster)

    # Then the rule falls short only if dave could submit to it
    assert [s.submitter for s in shortfalls] == (["dave"] if submits else [])


def test_a_requester_group_rule_is_checked_only_for_its_members() -> None:
    # Given the critical rule's approvers are missing, and dave is no contractor
    roster = [actor("dave", "cab", roles=REQUESTER), actor("carol", "cab")]

    shortfalls = unsatisfiable(POLICY, roster)

    # Then nobody reaches it: neither dave nor an outsider
    assert shortfalls == ()


def test_a_contractor_reaches_the_rule_of_contractors() -> None:
    roster = [actor("dave", "contractors", roles=REQUESTER), actor("carol", "cab")]

    shortfalls = unsatisfiable(POLICY, roster)

    assert [(s.rule_id, s.submitter) for s in shortfalls] == [("critical-accounts", "dave")]


def test_a_rule_an_earlier_rule_takes_every_request_of_is_not_the_submitters() -> None:
    # Given SREs' requests all go to the first rule, and only the second needs sec-officer
    policy = parse_policy(
        """\
policy: 1
rules:
  - {id: sre, when: {requester_group: [sre]}, require: [{group: cab}]}
  - {id: critical, when: {risk_level: [critical]}, require: [{actor: sec-officer}]}
  - {id: default, require: []}
"""
    )
    roster = [actor("sec-officer", "sre", roles=BOTH), actor("carol", "cab")]

    # Then the security officer never submits to the rule it alone could approve
    assert unsatisfiable(policy, roster) == ()
    assert not reachable(policy, policy.rule("critical"), frozenset({"sre"}))
    assert reachable(policy, policy.rule("critical"), frozenset({"ops"}))


def test_an_outsider_reaches_only_rules_without_requester_group() -> None:
    assert not reachable(POLICY, POLICY.rule("critical-accounts"), frozenset())
    assert reachable(POLICY, POLICY.rule("default"), frozenset())


def test_rule_shortfall_judges_one_rule_for_one_submitter() -> None:
    rule = POLICY.rule("critical-accounts")
    without_erin = [a for a in ROSTER if a.actor_id != "erin"]

    found = rule_shortfall(rule, without_erin, "alice")

    assert found is not None
    assert (found.steps[0][0], found.needed, found.matched) == (1, 2, ("bob",))
    assert rule_shortfall(rule, ROSTER, "alice") is None


# --------------------------------------------------------------------------- the roster


def registered(actor_id: str, revoked: list[str | None], **fields: Any) -> dict[str, Any]:
    """An actor as ``governance actors list --json`` prints it."""
    return {
        "actor_id": actor_id,
        "name": actor_id.title(),
        "type": "user",
        "roles": ["approver"],
        "groups": ["cab"],
        "active": True,
        "created_at": "2026-11-28T13:00:00Z",
        "updated_at": "2026-11-28T13:00:00Z",
        "keys": [
            {"key_id": f"k{n}", "actor_id": actor_id, "public_key": "x", "revoked_at": r}
            for n, r in enumerate(revoked)
        ],
        **fields,
    }


def test_a_registry_actor_holds_a_key_while_one_is_unrevoked() -> None:
    assert roster_actor_from_dict(registered("a", [None, "2026-11-28T13:00:00Z"])).has_key
    assert not roster_actor_from_dict(registered("a", ["2026-11-28T13:00:00Z"])).has_key
    assert not roster_actor_from_dict(registered("a", [])).has_key


def test_a_registry_actor_reads_as_its_roles_groups_and_activity() -> None:
    read = roster_actor_from_dict(registered("a", [None], active=False, roles=["requester"]))

    assert read == RosterActor(
        actor_id="a",
        active=False,
        roles=frozenset({"requester"}),
        groups=frozenset({"cab"}),
        has_key=True,
    )


def test_a_roster_is_read_from_json_lines_or_an_array() -> None:
    actors = [registered("a", [None]), registered("b", [])]
    lines = "\n".join(json.dumps(a) for a in actors) + "\n"

    assert parse_roster(lines) == parse_roster(json.dumps(actors))
    assert [a.actor_id for a in parse_roster(lines)] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '{"actor_id": "a"}\n\n{"actor": "b"}\n',
            "line 3: expected an actor object with an actor_id",
        ),
        ('{"actor_id": "a"}\nnot json\n', "line 2: not JSON"),
        ('[{"actor_id": "a"}, 7]', "item 1: expected an actor object with an actor_id"),
    ],
    ids=["no-actor-id", "not-json", "array-item"],
)
def test_a_roster_that_is_not_actors_is_refused_naming_where(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_roster(text)
