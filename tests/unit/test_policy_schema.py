"""The JSON Schema of the approval policy document (contract/schemas/policy.schema.json)
accepts every document the reader accepts, and refuses unknown fields, values outside the
enumerations and misshapen rules and steps, as the reader does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from governance.policy_document import PolicyError, load_document, policy_from_document
from governance.schema import schema_named

from .test_policy_document import EXAMPLE

VALIDATOR = Draft202012Validator(schema_named("policy"))


def reader_accepts(document: Any) -> bool:
    try:
        policy_from_document(document)
    except PolicyError:
        return False
    return True


def test_the_schema_accepts_the_example_document() -> None:
    document = load_document(EXAMPLE)

    assert reader_accepts(document)
    assert VALIDATOR.is_valid(document)


def test_the_schema_is_published_with_its_id_and_title() -> None:
    schema = schema_named("policy")

    assert schema["$id"] == "urn:governance:contract:policy"
    assert schema["title"] == "An approval policy document (YAML or JSON)"


def edited(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """The example document with the value at ``path`` replaced (``...`` deletes it)."""
    document: dict[str, Any] = copy.deepcopy(load_document(EXAMPLE))
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


FIRST = ("rules", 0)
REFUSED = [
    pytest.param(edited(("owner",), "sre"), id="unknown-top-level-field"),
    pytest.param(edited((*FIRST, "priority"), 1), id="unknown-rule-field"),
    pytest.param(edited((*FIRST, "when", "owner"), ["sre"]), id="unknown-when-attribute"),
    pytest.param(edited((*FIRST, "require", 0, "quorum"), 2), id="unknown-step-field"),
    pytest.param(edited((*FIRST, "when", "risk_level"), ["extreme"]), id="risk-level"),
    pytest.param(edited((*FIRST, "when", "scope"), ["planet"]), id="scope"),
    pytest.param(edited(("policy",), 2), id="version-2"),
    pytest.param(edited(("policy",), ...), id="no-version"),
    pytest.param(edited(("rules",), []), id="no-rules"),
    pytest.param(edited((*FIRST, "id"), "Critical"), id="rule-id"),
    pytest.param(edited((*FIRST, "require"), ...), id="no-require"),
    pytest.param(edited((*FIRST, "when"), {}), id="empty-when"),
    pytest.param(edited((*FIRST, "when", "category"), []), id="empty-values"),
    pytest.param(edited((*FIRST, "when", "category"), ["a", "a"]), id="repeated-value"),
    pytest.param(edited((*FIRST, "when", "tags_any"), "pci"), id="values-not-a-list"),
    pytest.param(edited((*FIRST, "require", 1, "group"), "sre"), id="group-and-actor"),
    pytest.param(edited((*FIRST, "require", 0, "group"), ...), id="neither"),
    pytest.param(edited((*FIRST, "require", 1, "min_approvals"), 2), id="actor-twice"),
    pytest.param(edited((*FIRST, "require", 0, "min_approvals"), 0), id="zero-approvals"),
    pytest.param(edited((*FIRST, "pending_for"), "0h"), id="zero-duration"),
    pytest.param(edited((*FIRST, "pending_for"), "3 days"), id="duration-words"),
]


@pytest.mark.parametrize("document", REFUSED)
def test_the_schema_refuses_what_the_reader_refuses_for_its_shape(
    document: dict[str, Any],
) -> None:
    assert not reader_accepts(document)
    assert not VALIDATOR.is_valid(document)


# --------------------------------------------------------------------------- generated


def text_from(*choices: str) -> st.SearchStrategy[str]:
    return st.sampled_from(choices)


def rarely(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value the reader takes, sometimes one it refuses, so both kinds are drawn."""
    return st.integers(0, 19).flatmap(lambda n: bad if n == 0 else good)


ATTRIBUTE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "mutation_type": rarely(text_from("update", "raise-limit"), text_from(" ", "x\x00")),
    "state_type": text_from("account", "config"),
    "risk_level": rarely(text_from("low", "medium", "high", "critical"), st.just("extreme")),
    "scope": rarely(text_from("single", "module", "system", "global"), st.just("planet")),
    "category": rarely(text_from("payments", "docs"), st.one_of(st.integers(0, 3), st.booleans())),
    "tags_any": rarely(text_from("pci", "sox"), st.just("")),
    "requester_group": rarely(text_from("contractors", "interns"), st.just("a\tb")),
}


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    step: dict[str, Any] = {}
    kind = draw(rarely(text_from("group", "actor"), text_from("both", "neither")))
    if kind in ("group", "both"):
        step["group"] = draw(rarely(text_from("sre", "cab"), st.just("")))
    if kind in ("actor", "both"):
        step["actor"] = draw(text_from("sec-officer", "bob"))
    if draw(st.booleans()):
        good = st.just(1) if kind == "actor" else st.integers(1, 100)
        step["min_approvals"] = draw(rarely(good, st.sampled_from([0, 2, 101, "2", True])))
    if draw(st.booleans()):
        step["description"] = draw(rarely(text_from("Two SREs", ""), st.just("a\x00")))
    if draw(st.integers(0, 29)) == 0:
        step["quorum"] = 2
    return step


@st.composite
def rules(draw: st.DrawFn, index: int, last: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": draw(rarely(st.sampled_from([f"r{index}", "a" * 64]), text_from("R", "-x", "")))
    }
    if not last or draw(st.integers(0, 19)) == 0:
        names = draw(
            st.lists(st.sampled_from(sorted(ATTRIBUTE_VALUES)), min_size=1, max_size=3, unique=True)
        )
        rule["when"] = {
            name: draw(st.lists(ATTRIBUTE_VALUES[name], min_size=1, max_size=3, unique=True))
            for name in names
        }
    rule["require"] = draw(st.lists(steps(), max_size=3))
    if draw(st.booleans()):
        rule["pending_for"] = draw(
            rarely(text_from("72h", "30s", "36500d"), text_from("0m", "1w", "36501d"))
        )
    if draw(st.booleans()):
        rule["description"] = draw(text_from("why", ""))
    if draw(st.integers(0, 29)) == 0:
        del rule["require"]
    return rule


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 4))
    document: dict[str, Any] = {
        "policy": draw(rarely(st.just(1), st.sampled_from([2, "1", True]))),
        "rules": [draw(rules(index, index == count - 1)) for index in range(count)],
    }
    if draw(st.integers(0, 29)) == 0:
        document["version"] = 1
    return document


@settings(max_examples=400, deadline=None)
@given(document=documents())
def test_the_schema_accepts_every_document_the_reader_accepts(document: dict[str, Any]) -> None:
    accepted = reader_accepts(document)
    event(f"the reader accepts: {accepted}")
    if accepted:
        assert VALIDATOR.is_valid(document), list(VALIDATOR.iter_errors(document))
