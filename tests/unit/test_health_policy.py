"""What ``governance status`` makes of the approval policy: the active version checked
against the registry, and the problems it reports (pure: the rows are given)."""

from __future__ import annotations

from governance.satisfiability import RosterActor
from producer.health import policy_problems, policy_state

DOCUMENT = {"policy": 1, "rules": [{"id": "default", "require": [{"group": "cab"}]}]}
APPROVER = RosterActor("alice", roles=frozenset({"approver"}), groups=frozenset({"cab"}))


def test_no_policy_applied_is_a_problem() -> None:
    state = policy_state(None, [APPROVER])

    assert (state.applied, state.satisfiable) == (False, None)
    assert policy_problems(state) == [
        "no approval policy is applied: workers in the default (required) mode refuse every "
        "submit (governance policy apply FILE)"
    ]


def test_a_policy_the_registry_satisfies_is_no_problem() -> None:
    state = policy_state((3, "f" * 64, DOCUMENT, False), [APPROVER])

    assert (state.version, state.rules, state.satisfiable) == (3, 1, True)
    assert policy_problems(state) == []
    assert state.to_dict()["satisfiable"] is True


def test_an_unsatisfiable_policy_quotes_its_first_shortfalls_and_counts_the_rest() -> None:
    # Four requesters, none of them an approver: one shortfall each, and the outsider's
    requesters = [RosterActor(f"r{n}", roles=frozenset({"requester"})) for n in range(4)]
    state = policy_state((3, "f" * 64, DOCUMENT, True), requesters)

    assert (state.satisfiable, len(state.shortfalls)) == (False, 5)
    (problem,) = policy_problems(state)
    assert problem.startswith(
        "approval policy version 3 cannot be satisfied by the registry: rule default: for an "
        "outsider, step 1 (group cab, 1 approval) needs 1 distinct eligible approver; none can "
        "be matched; rule default: for submitter r0"
    )
    assert problem.endswith("(and 2 more)")


def test_a_stored_policy_this_release_cannot_read_is_a_problem() -> None:
    state = policy_state((3, "f" * 64, {"policy": 2, "rules": []}, False), [])

    assert state.satisfiable is False
    (problem,) = policy_problems(state)
    assert problem.startswith("approval policy version 3 cannot be read: policy: expected")
