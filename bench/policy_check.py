"""``python -m bench.policy_check``: time the approval policy's satisfiability check.

Generates, from a seed, a registry of ``--actors`` actors in ``--groups`` groups and a policy
of ``--rules`` rules over it (overlapping ``when`` conditions, a share of them naming
requester groups, steps of one to three groups or named actors), then times reading the
policy and :func:`governance.satisfiability.unsatisfiable` over every submitter. Prints one
JSON document. Needs no service: the check is pure.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from governance.policy import PolicyRule
from governance.policy_document import parse_policy, policy_from_document
from governance.satisfiability import RosterActor, unsatisfiable

RISK_LEVELS = ("low", "medium", "high", "critical")


def roster(actors: int, groups: int, rng: random.Random) -> list[RosterActor]:
    """Actors in one to three groups each; most active with a key, about half approvers."""
    names = [f"g{n:03d}" for n in range(groups)]
    return [
        RosterActor(
            actor_id=f"a{n:04d}",
            active=rng.random() < 0.97,
            roles=frozenset(
                role
                for role, share in (("requester", 0.6), ("approver", 0.5))
                if rng.random() < share
            ),
            groups=frozenset(rng.sample(names, rng.randint(1, 3))),
            has_key=rng.random() < 0.95,
        )
        for n in range(actors)
    ]


def policy_document(
    rules: int, groups: int, approvers: list[str], rng: random.Random
) -> dict[str, Any]:
    """A document of ``rules`` rules: each ``when`` draws from a few mutation types, risk
    levels, tags and (for about a third) requester groups; a rule an earlier one would
    shadow is drawn again, so the reader accepts the document."""
    names = [f"g{n:03d}" for n in range(groups)]
    written: list[dict[str, Any]] = []
    compiled: list[PolicyRule] = []
    while len(written) < rules - 1:
        when: dict[str, list[str]] = {
            "mutation_type": rng.sample([f"m{n}" for n in range(40)], rng.randint(1, 3))
        }
        if rng.random() < 0.5:
            when["risk_level"] = rng.sample(RISK_LEVELS, rng.randint(1, 3))
        if rng.random() < 0.3:
            when["tags_any"] = rng.sample([f"t{n}" for n in range(20)], rng.randint(1, 2))
        if rng.random() < 0.35:
            when["requester_group"] = rng.sample(names, rng.randint(1, 3))
        steps: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.15:
                steps.append({"actor": rng.choice(approvers)})
            else:
                steps.append({"group": rng.choice(names), "min_approvals": rng.randint(1, 3)})
        rule = {"id": f"rule-{len(written)}", "when": when, "require": steps}
        candidate = _compiled(rule, len(written))
        if any(earlier.covers(candidate) for earlier in compiled):
            continue
        written.append(rule)
        compiled.append(candidate)
    written.append({"id": "default", "require": [{"group": names[0]}]})
    return {"policy": 1, "rules": written}


def _compiled(rule: dict[str, Any], index: int) -> PolicyRule:
    document = {"policy": 1, "rules": [rule, {"id": "default", "require": []}]}
    compiled = policy_from_document(document).rules[0]
    return PolicyRule(id=compiled.id, index=index, require=compiled.require, when=compiled.when)


def large_policy(rules: int, seed: int = 1) -> str:
    """A policy of ``rules`` rules for the throughput bench: the generated ones, which name
    mutation types the bench's requests never have, then a catch-all that requires nothing,
    so each bench submit is evaluated against every rule and starts as it asks."""
    rng = random.Random(seed)
    people = roster(100, 20, rng)
    approvers = sorted(a.actor_id for a in people if a.may_approve)
    document = policy_document(rules, 20, approvers, rng)
    document["rules"][-1] = {"id": "default", "require": []}
    return json.dumps(document)


def measure(rules: int, actors: int, groups: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    people = roster(actors, groups, rng)
    approvers = sorted(a.actor_id for a in people if a.may_approve)
    text = json.dumps(policy_document(rules, groups, approvers, rng))
    started = time.perf_counter()
    policy = parse_policy(text)
    read = time.perf_counter()
    shortfalls = unsatisfiable(policy, people)
    checked = time.perf_counter()
    return {
        "rules": len(policy.rules),
        "actors": actors,
        "groups": groups,
        "submitters": sum(a.may_submit for a in people),
        "seed": seed,
        "read_seconds": round(read - started, 3),
        "check_seconds": round(checked - read, 3),
        "shortfalls": len(shortfalls),
        "rules_falling_short": len({s.rule_id for s in shortfalls}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_check", description=__doc__)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    print(json.dumps(measure(options.rules, options.actors, options.groups, options.seed)))


if __name__ == "__main__":
    main()
