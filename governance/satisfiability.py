"""Whether an approval policy can be satisfied by the registry as it stands.

A rule is satisfiable for a submitter when enough *distinct* eligible actors exist for all
its steps at once, none of them the submitter: a group step of ``min_approvals`` *k* needs
*k* members of the group, a named step needs that actor, and nobody fills two places. That
is a bipartite matching of steps (with their *k* places) to actors, not a count per step: a
rule asking for two SREs and the security officer, who is an SRE, needs three people, and
the security officer counts once. Eligible means active, holding the ``approver`` role and
at least one unrevoked key, and a member of the step's group (or the named actor).

Who could submit: every active actor with the ``requester`` role, and *an outsider*, an
actor in none of the groups who is none of the approvers (an actor the registry does not
know, in development mode, is one). :func:`unsatisfiable` checks each rule for each of them
that can *reach* it: a submitter reaches a rule when some request it could make matches the
rule and no rule before it. ``requester_group`` conditions decide this by the submitter's
groups alone, and the rest by the request, so a rule whose every request a submitter's
earlier rule takes (``requester_group: [sre]`` before a rule for critical changes, say) is
never that submitter's to satisfy, and an outsider only reaches rules that name no
``requester_group``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from governance.policy import (
    ENUMERATED,
    Attribute,
    Policy,
    PolicyRule,
    Step,
)
from governance.trust import Role

#: The attributes a request decides, as opposed to its submitter (``requester_group``).
REQUEST_ATTRIBUTES: tuple[Attribute, ...] = tuple(
    a for a in Attribute if a is not Attribute.REQUESTER_GROUP
)


@dataclass(frozen=True, slots=True)
class RosterActor:
    """A registered actor as the satisfiability check sees it."""

    actor_id: str
    active: bool = True
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    #: Whether it holds at least one key that is not revoked (so it can sign a decision).
    has_key: bool = True

    @property
    def may_approve(self) -> bool:
        """Active, holding the ``approver`` role and an unrevoked key."""
        return self.active and Role.APPROVER in self.roles and self.has_key

    @property
    def may_submit(self) -> bool:
        """Active and holding the ``requester`` role."""
        return self.active and Role.REQUESTER in self.roles

    def why_not_approver(self) -> str:
        """Why it may not approve, in words (empty when it may)."""
        reasons = [
            reason
            for reason, missing in (
                ("inactive", not self.active),
                ("no role approver", Role.APPROVER not in self.roles),
                ("no unrevoked key", not self.has_key),
            )
            if missing
        ]
        return ", ".join(reasons)


def roster_actor_from_dict(data: Mapping[str, Any]) -> RosterActor:
    """An actor as the registry writes it (``governance actors list --json``): ``actor_id``,
    ``roles``, ``groups``, ``active`` and its ``keys``, each with its ``revoked_at``."""
    return RosterActor(
        actor_id=data["actor_id"],
        active=bool(data.get("active", True)),
        roles=frozenset(data.get("roles") or ()),
        groups=frozenset(data.get("groups") or ()),
        has_key=any(key.get("revoked_at") is None for key in data.get("keys") or ()),
    )


def parse_roster(text: str) -> tuple[RosterActor, ...]:
    """A roster from the registry's JSON: one actor object per line (what ``governance
    actors list --json`` prints) or one array of them. ValueError naming the line (or the
    item) that is not an actor."""
    stripped = text.strip()
    if stripped.startswith("["):
        items = json.loads(stripped)
        places = [f"item {index}" for index in range(len(items))]
    else:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        items = []
        for number, line in lines:
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {number}: not JSON ({exc})") from exc
        places = [f"line {number}" for number, _ in lines]
    roster = []
    for place, item in zip(places, items, strict=True):
        if not isinstance(item, Mapping) or not isinstance(item.get("actor_id"), str):
            raise ValueError(f"{place}: expected an actor object with an actor_id")
        roster.append(roster_actor_from_dict(item))
    return tuple(roster)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A rule that cannot be satisfied for one submitter.

    ``steps`` are the steps (numbered from 1) that cannot all be met at once, ``needed`` the
    distinct approvers they need together, and ``matched`` the eligible actors (other than
    the submitter) that exist for them, fewer than ``needed``. ``submitter`` is None for an
    outsider. ``ineligible`` names the actors of those steps' groups (or named) who could
    fill a place but may not approve, and why.
    """

    rule_id: str
    submitter: str | None
    steps: tuple[tuple[int, Step], ...]
    needed: int
    matched: tuple[str, ...]
    ineligible: tuple[tuple[str, str], ...] = ()

    @property
    def message(self) -> str:
        """The shortfall in words, naming the rule, the submitter and what is missing."""
        who = "an outsider" if self.submitter is None else f"submitter {self.submitter}"
        named = [f"step {number} ({step})" for number, step in self.steps]
        steps = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
        verb = "needs" if len(named) == 1 else "need"
        approvers = "approver" if self.needed == 1 else "approvers"
        other = "" if self.submitter is None else f" other than {self.submitter}"
        found = (
            f"only {len(self.matched)} can be matched: {', '.join(self.matched)}"
            if self.matched
            else "none can be matched"
        )
        text = (
            f"rule {self.rule_id}: for {who}, {steps} {verb} {self.needed} distinct eligible "
            f"{approvers}{other}; {found}"
        )
        if self.ineligible:
            text += "; not eligible: " + ", ".join(f"{a} ({why})" for a, why in self.ineligible)
        return text

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- the matching


@dataclass(frozen=True, slots=True)
class _Matching:
    """The most places of a rule's steps that distinct actors can fill: ``assigned`` maps
    each actor used to its step, ``short`` lists the steps left with places unfilled."""

    assigned: Mapping[str, int]
    short: tuple[int, ...]


def _match(places: Sequence[int], candidates: Sequence[Sequence[str]]) -> _Matching:
    """A maximum matching of actors to steps: step *i* has ``places[i]`` places, each for a
    distinct actor among ``candidates[i]``.

    Kuhn's augmenting paths, one place at a time: a place no augmenting path reaches when
    its turn comes can never be filled later (a maximum matching keeps every vertex it has
    covered), so one pass over the places is enough. Steps stand for their places together
    (an actor fills at most one place of one step), which keeps each search to the steps
    and their candidates.
    """
    assigned: dict[str, int] = {}
    load = [0] * len(places)
    short = []
    for step, wanted in enumerate(places):
        while load[step] < wanted:
            path = _augmenting_path(step, candidates, assigned)
            if path is None:
                short.append(step)
                break
            # Each actor on the path moves into the step that reached it (the first one was
            # free): every step keeps its count but ``step``, which gains one.
            for actor, to_step in path:
                assigned[actor] = to_step
            load[step] += 1
    return _Matching(assigned, tuple(short))


def _augmenting_path(
    start: int, candidates: Sequence[Sequence[str]], assigned: Mapping[str, int]
) -> list[tuple[str, int]] | None:
    """The moves (actor, step it moves into) that give step ``start`` one more actor without
    taking one from any other step, the last move's actor a free one; None when there is
    no such path (breadth first, over steps)."""
    moves_into: dict[str, int] = {}  # actor -> the step it would move into
    freed_by: dict[int, str] = {}  # step -> the actor that would leave it
    seen = {start}
    queue = deque([start])
    while queue:
        step = queue.popleft()
        for actor in candidates[step]:
            if actor in moves_into:
                continue
            moves_into[actor] = step
            holder = assigned.get(actor)
            if holder is None:
                moves = []
                while True:
                    into = moves_into[actor]
                    moves.append((actor, into))
                    if into == start:
                        return moves
                    actor = freed_by[into]
            if holder not in seen:
                seen.add(holder)
                freed_by[holder] = actor
                queue.append(holder)
    return None


def _deficient(
    matching: _Matching, candidates: Sequence[Sequence[str]]
) -> tuple[list[int], list[str]]:
    """Steps that cannot all be met and every actor who could fill them, fewer than their
    places (Hall's condition failing): the steps reachable from a short step by alternating
    paths, and their candidates, every one of whom fills a place of those steps already."""
    steps = set(matching.short)
    actors: set[str] = set()
    queue = deque(matching.short)
    while queue:
        for actor in candidates[queue.popleft()]:
            if actor in actors:
                continue
            actors.add(actor)
            holder = matching.assigned[actor]
            if holder not in steps:
                steps.add(holder)
                queue.append(holder)
    return sorted(steps), sorted(actors)


def rule_shortfall(
    rule: PolicyRule, roster: Iterable[RosterActor], submitter: str | None
) -> Shortfall | None:
    """Why ``rule`` cannot be satisfied for ``submitter`` (an actor id, or None for an
    outsider) with the actors of ``roster``, or None when it can. Who can reach the rule
    is not asked here (see :func:`unsatisfiable`)."""
    return _RuleCheck(rule, _Roster(roster)).shortfall(submitter)


class _Roster:
    """The roster indexed for the checks: eligible approvers by group and by id."""

    def __init__(self, actors: Iterable[RosterActor]) -> None:
        self.actors = {actor.actor_id: actor for actor in actors}
        self.approvers = {a.actor_id for a in self.actors.values() if a.may_approve}
        self.members: dict[str, list[str]] = {}
        for actor in sorted(self.actors.values(), key=lambda a: a.actor_id):
            for group in actor.groups:
                self.members.setdefault(group, []).append(actor.actor_id)

    def named(self, step: Step) -> list[str]:
        """The actor ``step`` names, or the members of its group, in id order."""
        return [step.actor] if step.actor is not None else self.members.get(step.group or "", [])

    def candidates(self, step: Step) -> list[str]:
        """The eligible actors for ``step``, in id order."""
        return [actor_id for actor_id in self.named(step) if actor_id in self.approvers]

    def ineligible(self, step: Step) -> list[tuple[str, str]]:
        """The actors ``step`` names or whose group it names who may not approve, and why."""
        if step.actor is not None and step.actor not in self.actors:
            return [(step.actor, "not registered")]
        named = self.named(step)
        return [
            (actor_id, self.actors[actor_id].why_not_approver())
            for actor_id in named
            if actor_id not in self.approvers
        ]


class _RuleCheck:
    """One rule's steps against the roster, for one submitter after another."""

    def __init__(self, rule: PolicyRule, roster: _Roster) -> None:
        self.rule = rule
        self.roster = roster
        self.places = [step.min_approvals for step in rule.require]
        self.candidates = [roster.candidates(step) for step in rule.require]
        self.involved = {actor for found in self.candidates for actor in found}
        self._satisfiable: dict[frozenset[int], bool] = {}

    def satisfiable(self, submitter: str | None) -> bool:
        """Whether the steps can all be met without ``submitter``.

        The answer only depends on the steps the submitter is a candidate for: submitters
        who are candidates for the same steps are interchangeable, so it is kept by them.
        """
        where = frozenset(
            index
            for index, found in enumerate(self.candidates)
            if submitter in self.involved and submitter in found
        )
        known = self._satisfiable.get(where)
        if known is None:
            known = not _match(self.places, self._without(submitter)).short
            self._satisfiable[where] = known
        return known

    def shortfall(self, submitter: str | None) -> Shortfall | None:
        if self.satisfiable(submitter):
            return None
        candidates = self._without(submitter)
        steps, actors = _deficient(_match(self.places, candidates), candidates)
        ineligible = {
            pair
            for index in steps
            for pair in self.roster.ineligible(self.rule.require[index])
            if pair[0] != submitter
        }
        return Shortfall(
            rule_id=self.rule.id,
            submitter=submitter,
            steps=tuple((index + 1, self.rule.require[index]) for index in steps),
            needed=sum(self.places[index] for index in steps),
            matched=tuple(actors),
            ineligible=tuple(sorted(ineligible)),
        )

    def _without(self, submitter: str | None) -> list[list[str]]:
        return [[a for a in found if a != submitter] for found in self.candidates]


# --------------------------------------------------------------------------- who reaches a rule


class _Reach:
    """Which rules a submitter with given groups can reach: some request of theirs matches
    the rule and none of the rules before it.

    A submitter's groups settle every ``requester_group`` condition; what is left is to
    find request attributes matching the rule's other conditions and refuting, for each
    earlier rule still in play, at least one of its conditions. Each attribute only needs
    a few candidate values: one of the rule's values where it names the attribute (a
    single tag of its ``tags_any``: more tags only match more rules), else a value no rule
    lists (no tags at all), or any value of an enumeration. Each candidate is kept as the
    set of earlier rules it fails to refute, and the search looks for one candidate per
    attribute whose sets have nothing in common.
    """

    def __init__(self, policy: Policy) -> None:
        self.rules = policy.rules
        self.group_rules = [
            rule.index for rule in self.rules if rule.condition(Attribute.REQUESTER_GROUP)
        ]
        self.options = [self._options(rule) for rule in self.rules]
        self._known: dict[tuple[int, int], bool] = {}

    def group_bits(self, groups: frozenset[str]) -> int:
        """The rules whose ``requester_group`` condition ``groups`` meet, as bits."""
        bits = 0
        for index in self.group_rules:
            listed = self.rules[index].condition(Attribute.REQUESTER_GROUP)
            if listed is not None and not listed.isdisjoint(groups):
                bits |= 1 << index
        return bits

    def reachable(self, rule: PolicyRule, bits: int) -> bool:
        """Whether a submitter whose groups meet the ``requester_group`` conditions in
        ``bits`` (see :meth:`group_bits`) reaches ``rule``."""
        index = rule.index
        if rule.condition(Attribute.REQUESTER_GROUP) is not None and not bits >> index & 1:
            return False
        # Earlier rules still in play: those naming no requester_group, and those whose
        # requester_group the submitter meets.
        group_mask = sum(1 << i for i in self.group_rules if i < index)
        in_play = ((1 << index) - 1) & ~(group_mask & ~bits)
        key = (index, in_play)
        known = self._known.get(key)
        if known is None:
            known = _escapes(self.options[index], in_play)
            self._known[key] = known
        return known

    def _options(self, rule: PolicyRule) -> list[list[int]]:
        """For each request attribute, the candidate values for ``rule``, each as the bits
        of the earlier rules whose condition on that attribute it meets (a rule naming no
        such condition meets it with any value)."""
        earlier = self.rules[: rule.index]
        options = []
        for attribute in REQUEST_ATTRIBUTES:
            listed = rule.condition(attribute)
            if listed is not None:
                values: list[str | None] = [*sorted(listed)]
            elif attribute in ENUMERATED:
                values = list(ENUMERATED[attribute])
            else:
                values = [None]  # a value no rule lists; for tags, none at all
            masks = set()
            for value in values:
                bits = 0
                for other in earlier:
                    condition = other.condition(attribute)
                    if condition is None or (value is not None and value in condition):
                        bits |= 1 << other.index
                masks.add(bits)
            # A candidate meeting a superset of another's conditions is never better.
            options.append([m for m in masks if not any(o != m and o & m == o for o in masks)])
        return options


def _escapes(options: Sequence[Sequence[int]], in_play: int) -> bool:
    """Whether one candidate per attribute leaves no rule of ``in_play`` met on every
    attribute (depth first, each state visited once)."""
    seen: set[tuple[int, int]] = set()
    stack = [(0, in_play)]
    while stack:
        depth, alive = stack.pop()
        if alive == 0:
            return True
        if depth == len(options) or (depth, alive) in seen:
            continue
        seen.add((depth, alive))
        stack.extend((depth + 1, alive & option) for option in options[depth])
    return False


def reachable(policy: Policy, rule: PolicyRule, groups: frozenset[str]) -> bool:
    """Whether a submitter in ``groups`` (none for an outsider) can make a request that
    ``rule`` matches and no rule before it does."""
    reach = _Reach(policy)
    return reach.reachable(rule, reach.group_bits(groups))


# --------------------------------------------------------------------------- the check


def unsatisfiable(policy: Policy, roster: Iterable[RosterActor]) -> tuple[Shortfall, ...]:
    """Every rule of ``policy`` that some submitter who can reach it could not have
    satisfied, one shortfall per rule and submitter (an outsider first, then submitters
    by id), in rule order. Empty when the policy is satisfiable by construction."""
    indexed = _Roster(roster)
    reach = _Reach(policy)
    submitters = sorted(
        (actor for actor in indexed.actors.values() if actor.may_submit),
        key=lambda actor: actor.actor_id,
    )
    bits = {actor.actor_id: reach.group_bits(actor.groups) for actor in submitters}
    shortfalls = []
    for rule in policy.rules:
        check = _RuleCheck(rule, indexed)
        if reach.reachable(rule, 0):
            found = check.shortfall(None)
            if found is not None:
                shortfalls.append(found)
        for actor in submitters:
            if reach.reachable(rule, bits[actor.actor_id]):
                found = check.shortfall(actor.actor_id)
                if found is not None:
                    shortfalls.append(found)
    return tuple(shortfalls)
