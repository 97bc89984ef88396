"""Property-based: rule matching, first match and shadowing agree with brute force.

Rules are drawn over a small finite universe of attribute values: two values a rule may list
for each free attribute and each set attribute, the enumerations in full for ``risk_level``
and ``scope``, and requests also take a value no rule lists (``z``) or, for tags and
groups, any subset of them. Matching only reads the attributes a rule names, so a pair of
rules is compared over every request built from the attributes either of them names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import combinations, product
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from governance.policy import (
    AT_LEAST_ONE,
    ENUMERATED,
    Attribute,
    Condition,
    Policy,
    PolicyRule,
    RequestAttributes,
    first_match,
)
from governance.policy_document import PolicyError, policy_from_document

#: What a rule may list for each attribute.
LISTABLE: dict[Attribute, tuple[str, ...]] = {
    attribute: ENUMERATED.get(attribute, ("a", "b")) for attribute in Attribute
}
#: What a request may hold for each attribute: one value (None when absent) or a set.
SINGLE_VALUES: dict[Attribute, tuple[str | None, ...]] = {
    attribute: (*ENUMERATED[attribute],) if attribute in ENUMERATED else ("a", "b", "z")
    for attribute in Attribute
    if attribute not in AT_LEAST_ONE
}
SET_VALUES: tuple[frozenset[str], ...] = tuple(
    frozenset(chosen) for size in range(4) for chosen in combinations(("a", "b", "z"), size)
)
FIELD = {Attribute.TAGS_ANY: "tags", Attribute.REQUESTER_GROUP: "requester_groups"}
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

When = dict[str, list[str]]


@st.composite
def whens(draw: st.DrawFn, max_attributes: int = 3) -> When:
    """A rule's ``when``: one to ``max_attributes`` attributes, each a non-empty list."""
    attributes = draw(
        st.lists(st.sampled_from(list(Attribute)), min_size=1, max_size=max_attributes, unique=True)
    )
    return {
        attribute.value: draw(
            st.lists(st.sampled_from(LISTABLE[attribute]), min_size=1, unique=True)
        )
        for attribute in attributes
    }


def compiled(when: Mapping[str, Sequence[str]] | None, index: int = 0) -> PolicyRule:
    """The rule of ``when``, built without the document reader's static checks."""
    conditions = None
    if when is not None:
        conditions = tuple(Condition(Attribute(k), frozenset(v)) for k, v in when.items())
    return PolicyRule(id=f"r{index}", index=index, when=conditions)


def naive_matches(when: Mapping[str, Sequence[str]] | None, request: Mapping[str, Any]) -> bool:
    """The contract's matching, read straight off the document's words."""
    for name, values in (when or {}).items():
        held = request.get(name)
        if Attribute(name) in AT_LEAST_ONE:
            if not any(value in values for value in held or ()):
                return False
        elif held is None or held not in values:
            return False
    return True


def requests_over(attributes: set[Attribute]) -> Iterator[tuple[dict[str, Any], RequestAttributes]]:
    """Every request varying ``attributes`` over their universe, the others fixed at a value
    no rule lists: each as the document's names and as :class:`RequestAttributes`."""

    def universe(attribute: Attribute) -> Sequence[Any]:
        if attribute not in attributes:
            return (frozenset(),) if attribute in AT_LEAST_ONE else ("z",)
        return SET_VALUES if attribute in AT_LEAST_ONE else SINGLE_VALUES[attribute]

    choices = [universe(a) for a in Attribute]
    for values in product(*choices):
        by_name = {a.value: v for a, v in zip(Attribute, values, strict=True)}
        fields = {FIELD.get(a, a.value): v for a, v in zip(Attribute, values, strict=True)}
        yield by_name, RequestAttributes(**fields)


def named(*rules: When | None) -> set[Attribute]:
    return {Attribute(name) for when in rules for name in (when or {})}


def brute_covers_every_submit(earlier: When) -> bool:
    """Whether ``earlier`` matches every request a submit can make (one with a value for
    each attribute but tags and groups, which may be none), by enumeration."""
    return all(naive_matches(earlier, request) for request, _ in requests_over(named(earlier)))


def brute_covers(earlier: When, later: When) -> bool:
    """Whether every request ``later`` matches, ``earlier`` matches too, by enumeration."""
    return all(
        naive_matches(earlier, request)
        for request, _ in requests_over(named(earlier, later))
        if naive_matches(later, request)
    )


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request over the universe, any attribute possibly absent."""
    request: dict[str, Any] = {}
    for attribute in Attribute:
        if attribute in AT_LEAST_ONE:
            request[attribute.value] = draw(st.sampled_from(SET_VALUES))
        else:
            request[attribute.value] = draw(st.sampled_from((*SINGLE_VALUES[attribute], None)))
    return request


def as_attributes(request: Mapping[str, Any]) -> RequestAttributes:
    return RequestAttributes(**{FIELD.get(a, a.value): request[a.value] for a in Attribute})


# --------------------------------------------------------------------------- matching


@PROPERTY_SETTINGS
@given(when=whens(), request=requests())
def test_a_rule_matches_exactly_the_requests_the_contract_says(
    when: When, request: dict[str, Any]
) -> None:
    assert compiled(when).matches(as_attributes(request)) == naive_matches(when, request)


@PROPERTY_SETTINGS
@given(rules=st.lists(whens(), max_size=5), request=requests())
def test_the_first_matching_rule_wins(rules: list[When], request: dict[str, Any]) -> None:
    # Given rules in order, ending with the catch-all
    ordered: list[When | None] = [*rules, None]
    policy = Policy(
        rules=tuple(compiled(when, index) for index, when in enumerate(ordered)),
        document={},
        sha256="",
    )

    # When the policy is evaluated
    chosen = first_match(policy, as_attributes(request))

    # Then it picked the lowest-numbered rule that matches
    matching = [index for index, when in enumerate(ordered) if naive_matches(when, request)]
    assert chosen.index == min(matching)


# --------------------------------------------------------------------------- shadowing


@PROPERTY_SETTINGS
@given(earlier=whens(), later=whens())
def test_covers_agrees_with_enumerating_the_requests(earlier: When, later: When) -> None:
    covers = compiled(earlier).covers(compiled(later, 1))
    event(f"covers: {covers}")

    assert covers == brute_covers(earlier, later)


@PROPERTY_SETTINGS
@given(earlier=whens(max_attributes=2))
def test_a_rule_covers_the_catch_all_only_when_it_matches_every_submit(earlier: When) -> None:
    covers = compiled(earlier).covers(compiled(None, 1))

    assert covers == brute_covers_every_submit(earlier)


@PROPERTY_SETTINGS
@given(rules=st.lists(whens(max_attributes=2), min_size=1, max_size=4))
def test_the_reader_reports_exactly_the_rules_an_earlier_rule_shadows(rules: list[When]) -> None:
    # Given a document of these rules and the catch-all
    ids = [*(f"r{i}" for i in range(len(rules))), "default"]
    document = {
        "policy": 1,
        "rules": [
            *({"id": ids[i], "when": when, "require": []} for i, when in enumerate(rules)),
            {"id": "default", "require": []},
        ],
    }
    # Then the rules it says can never match are those some earlier rule covers by brute force
    expected = []
    for j, later in enumerate([*rules, None]):
        for i, earlier in enumerate(rules[:j]):
            if later is None:
                shadowed = brute_covers_every_submit(earlier)
            else:
                shadowed = brute_covers(earlier, later)
            if shadowed:
                expected.append(
                    f"rules[{j}]: rule '{ids[j]}' can never "
                    f"match: rules[{i}] (rule 'r{i}') comes first and matches every "
                    "request it would"
                )
                break
    if not expected:
        policy_from_document(document)
        return
    with pytest.raises(PolicyError) as refused:
        policy_from_document(document)
    assert list(refused.value.problems) == expected
