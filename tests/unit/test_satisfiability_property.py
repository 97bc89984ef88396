"""Property-based: the satisfiability check agrees with brute force on small generated rosters
(up to 6 actors in up to 3 groups, rules of up to 3 steps): a rule falls short for a submitter
exactly when no assignment of distinct eligible actors, none the submitter, fills all its
places, and a submitter reaches a rule exactly when some request of theirs is first matched
by it."""

from __future__ import annotations

from dataclasses import replace
from itertools import permutations
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from governance.policy import Policy, PolicyRule, Step, first_match
from governance.satisfiability import RosterActor, reachable, rule_shortfall, unsatisfiable

from .test_policy_property import When, compiled, named, requests_over, whens

ACTOR_IDS = [f"a{n}" for n in range(6)]
GROUPS = ["g0", "g1", "g2"]
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)
#: The roster's group for each value a generated ``requester_group`` lists.
ROSTER_GROUP = {"a": "g0", "b": "g1"}


@st.composite
def rosters(draw: st.DrawFn) -> list[RosterActor]:
    count = draw(st.integers(0, 6))
    return [
        RosterActor(
            actor_id=ACTOR_IDS[n],
            active=draw(st.integers(0, 5)) > 0,
            roles=frozenset(
                role
                for role, held in (
                    ("approver", draw(st.integers(0, 4)) > 0),
                    ("requester", draw(st.booleans())),
                )
                if held
            ),
            groups=frozenset(draw(st.sets(st.sampled_from(GROUPS)))),
            has_key=draw(st.integers(0, 5)) > 0,
        )
        for n in range(count)
    ]


@st.composite
def step_lists(draw: st.DrawFn) -> tuple[Step, ...]:
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 2)) > 0:
            steps.append(
                Step(group=draw(st.sampled_from(GROUPS)), min_approvals=draw(st.integers(1, 3)))
            )
        else:
            steps.append(Step(actor=draw(st.sampled_from([*ACTOR_IDS, "ghost"]))))
    return tuple(steps)


def eligible(roster: list[RosterActor], step: Step, submitter: str | None) -> set[str]:
    """Who may fill a place of ``step``, read straight off the contract's words."""
    return {
        a.actor_id
        for a in roster
        if a.active
        and "approver" in a.roles
        and a.has_key
        and (a.actor_id == step.actor if step.actor else step.group in a.groups)
        and a.actor_id != submitter
    }


def brute_satisfiable(
    roster: list[RosterActor], steps: tuple[Step, ...], submitter: str | None
) -> bool:
    """Whether some assignment of distinct actors fills every place, trying them all."""
    places = [index for index, step in enumerate(steps) for _ in range(step.min_approvals)]
    who = [eligible(roster, step, submitter) for step in steps]
    pool = sorted(set().union(*who))
    return any(
        all(actor in who[step] for actor, step in zip(chosen, places, strict=True))
        for chosen in permutations(pool, len(places))
    )


@PROPERTY_SETTINGS
@given(roster=rosters(), steps=step_lists(), who=st.sampled_from([None, *ACTOR_IDS]))
def test_a_rule_falls_short_exactly_when_no_assignment_fills_it(
    roster: list[RosterActor], steps: tuple[Step, ...], who: str | None
) -> None:
    rule = PolicyRule(id="r", index=0, require=steps)

    found = rule_shortfall(rule, roster, who)

    satisfiable = brute_satisfiable(roster, steps, who)
    event(f"satisfiable: {satisfiable}")
    assert (found is None) == satisfiable
    if found is not None:
        # The steps it names need more places than all their eligible actors together
        short = [steps[number - 1] for number, _ in found.steps]
        assert [step for _, step in found.steps] == short
        assert found.needed == sum(step.min_approvals for step in short)
        assert set(found.matched) == set().union(*(eligible(roster, s, who) for s in short))
        assert len(found.matched) < found.needed


def brute_reaches(rules: list[When], index: int, groups: frozenset[str]) -> bool:
    """Whether a request of a submitter in ``groups`` is first matched by rule ``index``."""
    policy = policy_of(rules)
    non_group = named(*rules) - {a for a in named(*rules) if a.value == "requester_group"}
    return any(
        first_match(policy, replace(request, requester_groups=groups)).index == index
        for _, request in requests_over(non_group)
    )


def policy_of(rules: list[When]) -> Policy:
    """The rules and the catch-all, without the reader's static checks."""
    ordered: list[When | None] = [*rules, None]
    return Policy(
        rules=tuple(compiled(when, index) for index, when in enumerate(ordered)),
        document={},
        sha256="",
    )


@PROPERTY_SETTINGS
@given(
    rules=st.lists(whens(max_attributes=2), max_size=3),
    groups=st.sets(st.sampled_from(["a", "b", "z"])).map(frozenset),
)
def test_a_submitter_reaches_exactly_the_rules_some_request_of_theirs_is_first_matched_by(
    rules: list[When], groups: frozenset[str]
) -> None:
    policy = policy_of(rules)

    for rule in policy.rules:
        reached = reachable(policy, rule, groups)
        event(f"reachable: {reached}")
        assert reached == brute_reaches(rules, rule.index, groups)


@PROPERTY_SETTINGS
@given(roster=rosters(), data=st.data())
def test_the_check_reports_each_rule_each_submitter_can_reach_and_not_satisfy(
    roster: list[RosterActor], data: Any
) -> None:
    # Given rules that may name the roster's groups as requester groups
    drawn: list[When] = data.draw(st.lists(whens(max_attributes=2), max_size=2))
    rules = []
    for index, when in enumerate([*drawn, None]):
        if when is not None and "requester_group" in when:
            listed = when["requester_group"]
            when = {**when, "requester_group": [ROSTER_GROUP[g] for g in listed]}
        rule = compiled(when, index)
        rules.append(replace(rule, id=f"r{index}", require=data.draw(step_lists())))
    policy = Policy(rules=tuple(rules), document={}, sha256="")

    # When the policy is checked against the roster
    found = {(s.rule_id, s.submitter) for s in unsatisfiable(policy, roster)}

    # Then it names every rule and submitter (outsider included) that reach it and fall short
    submitters: list[tuple[str | None, frozenset[str]]] = [(None, frozenset())]
    submitters += [(a.actor_id, a.groups) for a in roster if a.active and "requester" in a.roles]
    expected = {
        (rule.id, who)
        for rule in policy.rules
        for who, groups in submitters
        if reachable(policy, rule, groups) and not brute_satisfiable(roster, rule.require, who)
    }
    event(f"shortfalls: {min(len(expected), 3)}")
    assert found == expected
