"""The approval policy document: what it must say, how each mistake in it is named, its static
rules (catch-all last, unique ids, no shadowed rule), its registry check and its sha256."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import rfc8785

from governance.policy import Attribute, Condition, Step
from governance.policy_document import (
    PolicyError,
    document_sha256,
    load_document,
    parse_policy,
    policy_from_document,
    unregistered_names,
)

EXAMPLE = """\
policy: 1                          # format version
rules:                             # first match wins
  - id: critical-accounts
    description: Limits on accounts need SRE and security.
    when:
      mutation_type: [raise-limit, close-account]
      state_type: [account]
      risk_level: [high, critical]
      scope: [system, global]
      category: [payments]
      tags_any: [pci, sox]
      requester_group: [contractors]
    require:
      - group: sre
        min_approvals: 2
        description: Two SREs
      - actor: sec-officer
    pending_for: 72h
  - id: default
    require:
      - group: cab
"""

CATCH_ALL: dict[str, Any] = {"id": "default", "require": [{"group": "cab"}]}


def document(*rules: dict[str, Any]) -> dict[str, Any]:
    """A document of ``rules`` followed by the catch-all rule."""
    return {"policy": 1, "rules": [*rules, CATCH_ALL]}


def rule(rule_id: str = "r", require: list[Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A rule matching ``when`` (the keyword arguments other than the rule's own fields)."""
    own: dict[str, Any] = {k: fields.pop(k) for k in ("description", "pending_for") if k in fields}
    body: dict[str, Any] = {"id": rule_id, **own}
    if fields:
        body["when"] = fields
    body["require"] = [{"group": "sre"}] if require is None else require
    return body


def problems_of(source: dict[str, Any] | str | bytes) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as refused:
        if isinstance(source, str | bytes):
            parse_policy(source)
        else:
            policy_from_document(source)
    return refused.value.problems


def only_problem(source: dict[str, Any] | str | bytes) -> str:
    problems = problems_of(source)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- a valid document


def test_the_example_document_reads_as_its_rules_in_order() -> None:
    policy = parse_policy(EXAMPLE)

    first, default = policy.rules
    assert (first.id, first.index, default.id, default.index) == (
        "critical-accounts",
        0,
        "default",
        1,
    )
    assert first.description == "Limits on accounts need SRE and security."
    assert first.require == (
        Step(group="sre", min_approvals=2, description="Two SREs"),
        Step(actor="sec-officer"),
    )
    assert first.pending_for == timedelta(hours=72)
    assert first.when is not None
    assert Condition(Attribute.RISK_LEVEL, frozenset({"high", "critical"})) in first.when
    assert [c.attribute.value for c in first.when] == [
        "mutation_type",
        "state_type",
        "risk_level",
        "scope",
        "category",
        "tags_any",
        "requester_group",
    ]
    assert default.when is None
    assert default.require == (Step(group="cab", min_approvals=1),)
    assert default.pending_for is None


def test_a_policy_keeps_its_document_as_plain_data() -> None:
    assert parse_policy(EXAMPLE).document == load_document(EXAMPLE)


def test_the_sha256_is_that_of_the_rfc_8785_json_of_the_document() -> None:
    expected = hashlib.sha256(rfc8785.dumps(load_document(EXAMPLE))).hexdigest()

    assert parse_policy(EXAMPLE).sha256 == expected == document_sha256(load_document(EXAMPLE))


def test_the_same_document_as_json_has_the_same_rules_and_sha256() -> None:
    as_json = json.dumps(load_document(EXAMPLE), indent="\t")

    assert parse_policy(as_json) == parse_policy(EXAMPLE)


def test_the_sha256_ignores_key_order_comments_and_flow_style() -> None:
    respelled = """\
rules:
- {require: [{min_approvals: 2, group: sre, description: Two SREs}, {actor: sec-officer}],
   pending_for: 72h, id: critical-accounts,
   when: {requester_group: [contractors], tags_any: [pci, sox], category: [payments],
          scope: [system, global], risk_level: [high, critical], state_type: [account],
          mutation_type: [raise-limit, close-account]},
   description: Limits on accounts need SRE and security.}
- {require: [{group: cab}], id: default}
policy: 1
"""

    assert parse_policy(respelled).sha256 == parse_policy(EXAMPLE).sha256


def test_a_changed_document_has_another_sha256() -> None:
    changed = EXAMPLE.replace("min_approvals: 2", "min_approvals: 3")

    assert parse_policy(changed).sha256 != parse_policy(EXAMPLE).sha256


def test_a_rule_may_require_nothing() -> None:
    policy = policy_from_document(document(rule("free", require=[], category=["docs"])))

    assert policy.rules[0].require == ()


def test_a_named_actor_may_say_min_approvals_1() -> None:
    policy = policy_from_document(
        document(rule(require=[{"actor": "x", "min_approvals": 1}], category=["x"]))
    )

    assert policy.rules[0].require == (Step(actor="x"),)


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("72h", timedelta(hours=72)),
        ("7d", timedelta(days=7)),
        ("036500d", timedelta(days=36_500)),
    ],
)
def test_pending_for_is_a_whole_number_of_seconds_minutes_hours_or_days(
    text: str, duration: timedelta
) -> None:
    policy = policy_from_document(document(rule(pending_for=text, category=["x"])))

    assert policy.rules[0].pending_for == duration


def test_yaml_merge_keys_are_not_duplicate_keys() -> None:
    text = """\
policy: 1
rules:
  - &base {id: base, when: {category: [a]}, require: []}
  - <<: *base
    id: other
    when: {category: [b]}
  - {id: default, require: []}
"""

    assert [r.id for r in parse_policy(text).rules] == ["base", "other", "default"]


# --------------------------------------------------------------------------- the shape


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("", "document: expected a mapping with policy and rules, got null"),
        ("- a list", "document: expected a mapping with policy and rules, got a list"),
        ({"rules": [CATCH_ALL]}, "policy: required (the format version, 1)"),
        ({**document(), "policy": 2}, "policy: expected the format version 1, got 2"),
        ({**document(), "policy": "1"}, "policy: expected the format version 1, got '1'"),
        ({**document(), "policy": True}, "policy: expected the format version 1, got true"),
        ({"policy": 1}, "rules: required (a non-empty list of rules)"),
        (
            {"policy": 1, "rules": []},
            "rules: expected a non-empty list of rules, got an empty list",
        ),
        (
            {"policy": 1, "rules": {}},
            "rules: expected a non-empty list of rules, got an empty mapping",
        ),
        (
            {"policy": 1, "rules": ["default"]},
            "rules[0]: expected a mapping (a rule), got 'default'",
        ),
    ],
    ids=[
        "empty",
        "not-a-mapping",
        "no-version",
        "version-2",
        "version-string",
        "version-true",
        "no-rules",
        "empty-rules",
        "rules-mapping",
        "rule-string",
    ],
)
def test_the_document_must_state_its_version_and_its_rules(
    source: dict[str, Any] | str, problem: str
) -> None:
    assert only_problem(source) == problem


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({**document(), "version": 1}, "version: unknown field; expected one of policy, rules"),
        (
            document(rule(owner="sre")),
            "rules[0].when.owner: unknown field; expected one of mutation_type, state_type, "
            "risk_level, scope, category, tags_any, requester_group",
        ),
        (
            document({**rule(category=["x"]), "priority": 1}),
            "rules[0].priority: unknown field; expected one of id, description, when, require, "
            "pending_for",
        ),
        (
            document(rule(require=[{"group": "sre", "quorum": 2}], category=["x"])),
            "rules[0].require[0].quorum: unknown field; expected one of group, actor, "
            "min_approvals, description",
        ),
    ],
    ids=["top", "when", "rule", "step"],
)
def test_an_unknown_field_is_named_with_the_fields_expected_there(
    source: dict[str, Any], problem: str
) -> None:
    assert only_problem(source) == problem


ID_RULE = "must be 1 to 64 of a-z, 0-9 and -, starting with a letter or digit"


@pytest.mark.parametrize(
    ("rule_id", "problem"),
    [
        ("Critical", f"'Critical' {ID_RULE}"),
        ("-x", f"'-x' {ID_RULE}"),
        ("a" * 65, f"'{'a' * 37}...' {ID_RULE}"),
        ("x\n", f"'x\\n' {ID_RULE}"),
        (7, "expected a string, got 7 (quote it to make it a string)"),
    ],
    ids=["upper-case", "leading-dash", "too-long", "final-newline", "number"],
)
def test_a_rule_id_is_lower_case_letters_digits_and_dashes(rule_id: object, problem: str) -> None:
    source = document({"id": rule_id, "when": {"category": ["x"]}, "require": []})

    assert only_problem(source) == f"rules[0].id: {problem}"


def test_a_rule_id_of_64_characters_is_accepted() -> None:
    assert policy_from_document(document(rule("a" * 64, category=["x"]))).rules[0].id == "a" * 64


def test_a_rule_needs_an_id_and_its_require_list() -> None:
    problems = problems_of({"policy": 1, "rules": [{"when": {"category": ["x"]}}, CATCH_ALL]})

    assert problems == (
        "rules[0].id: required",
        "rules[0].require: required (a list of steps; [] when none is needed)",
    )


def test_require_is_a_list_of_steps() -> None:
    source = document({"id": "r", "when": {"category": ["x"]}, "require": {"group": "sre"}})

    assert only_problem(source) == "rules[0].require: expected a list of steps, got a mapping"


def test_a_risk_level_outside_the_enumeration_is_named_with_the_values_allowed() -> None:
    source = document(rule(), rule("b", risk_level=["high", "extreme"]))
    source["rules"][0] = rule("a", category=["x"])
    source["rules"].insert(2, rule("c", category=["y"]))

    assert only_problem(source) == (
        "rules[1].when.risk_level: 'extreme' is not one of low, medium, high, critical"
    )


def test_a_scope_outside_the_enumeration_is_named_with_the_values_allowed() -> None:
    assert only_problem(document(rule(scope=["planet"]))) == (
        "rules[0].when.scope: 'planet' is not one of single, module, system, global"
    )


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ([], "rules[0].when.category: expected a non-empty list of values, got an empty list"),
        ("payments", "rules[0].when.category: expected a non-empty list of values, got 'payments'"),
        (
            [True],
            "rules[0].when.category[0]: expected a string, got true (quote it to make it a string)",
        ),
        (["a", "a"], "rules[0].when.category: 'a' is listed twice"),
        (
            [" "],
            "rules[0].when.category[0]: expected a non-blank string without NUL characters, "
            "got ' '",
        ),
        (["x" * 201], "rules[0].when.category[0]: expected at most 200 characters, got 201"),
    ],
    ids=["empty", "not-a-list", "boolean", "twice", "blank", "too-long"],
)
def test_a_when_attribute_is_a_non_empty_list_of_distinct_strings(
    values: object, problem: str
) -> None:
    assert only_problem(document(rule(category=values))) == problem


def test_a_yaml_boolean_where_a_string_is_expected_says_to_quote_it() -> None:
    text = (
        "policy: 1\nrules:\n- {id: r, when: {tags_any: [on]}, require: []}\n- {id: d, require: []}"
    )

    assert only_problem(text) == (
        "rules[0].when.tags_any[0]: expected a string, got true (quote it to make it a string)"
    )


def test_a_requester_group_is_an_identifier() -> None:
    assert only_problem(document(rule(requester_group=["a\tb"]))) == (
        "rules[0].when.requester_group[0]: expected a non-blank string without control "
        "characters, got 'a\\tb'"
    )


def test_an_empty_when_is_refused_in_favour_of_no_when() -> None:
    source = document({"id": "r", "when": {}, "require": []})

    assert only_problem(source) == (
        "rules[0].when: expected at least one attribute; leave when out to match every request"
    )


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (
            {"group": "sre", "actor": "bob"},
            "rules[0].require[0]: expected exactly one of group and actor",
        ),
        ({"min_approvals": 2}, "rules[0].require[0]: expected exactly one of group and actor"),
        (
            {"group": ""},
            "rules[0].require[0].group: expected a non-blank string without control "
            "characters, got ''",
        ),
        (
            {"actor": None},
            "rules[0].require[0].actor: expected a string, got null (quote it to make it a string)",
        ),
        (
            {"group": "sre", "min_approvals": 0},
            "rules[0].require[0].min_approvals: expected an integer from 1 to 100, got 0",
        ),
        (
            {"group": "sre", "min_approvals": 101},
            "rules[0].require[0].min_approvals: expected an integer from 1 to 100, got 101",
        ),
        (
            {"group": "sre", "min_approvals": "2"},
            "rules[0].require[0].min_approvals: expected an integer from 1 to 100, got '2'",
        ),
        (
            {"group": "sre", "min_approvals": True},
            "rules[0].require[0].min_approvals: expected an integer from 1 to 100, got true",
        ),
        (
            {"actor": "bob", "min_approvals": 2},
            "rules[0].require[0].min_approvals: a named actor gives one approval; expected 1 or "
            "nothing, got 2 (more than one approval needs a group)",
        ),
        ("sre", "rules[0].require[0]: expected a mapping (a step), got 'sre'"),
        (
            {"group": "sre", "description": "a\x00b"},
            "rules[0].require[0].description: expected text without NUL characters, got 'a\\x00b'",
        ),
    ],
    ids=[
        "both",
        "neither",
        "empty-group",
        "null-actor",
        "zero",
        "too-many",
        "string",
        "boolean",
        "actor-twice",
        "not-a-mapping",
        "nul",
    ],
)
def test_a_step_is_a_group_with_its_approvals_or_one_named_actor(
    step: object, problem: str
) -> None:
    assert only_problem(document(rule(require=[step], category=["x"]))) == problem


def test_a_rule_has_at_most_100_steps() -> None:
    source = document(rule(require=[{"group": "sre"}] * 101, category=["x"]))

    assert only_problem(source) == "rules[0].require: expected at most 100 steps, got 101"


@pytest.mark.parametrize(
    ("duration", "problem"),
    [
        ("0h", "expected a positive whole number of s, m, h or d (like 72h), got '0h'"),
        ("72", "expected a positive whole number of s, m, h or d (like 72h), got '72'"),
        ("1w", "expected a positive whole number of s, m, h or d (like 72h), got '1w'"),
        ("-1h", "expected a positive whole number of s, m, h or d (like 72h), got '-1h'"),
        ("1.5h", "expected a positive whole number of s, m, h or d (like 72h), got '1.5h'"),
        ("72h\n", "expected a positive whole number of s, m, h or d (like 72h), got '72h\\n'"),
        (72, "expected a string, got 72 (quote it to make it a string)"),
        ("36501d", "expected at most 36500d, got '36501d'"),
        ("9" * 5000 + "s", f"expected at most 36500d, got '{'9' * 37}...'"),
    ],
    ids=["zero", "no-unit", "weeks", "negative", "fraction", "newline", "number", "long", "huge"],
)
def test_pending_for_is_a_positive_duration_of_at_most_100_years(
    duration: object, problem: str
) -> None:
    source = document(rule(pending_for=duration, category=["x"]))

    assert only_problem(source) == f"rules[0].pending_for: {problem}"


def test_every_problem_of_a_document_is_reported_at_once() -> None:
    source = {
        "policy": 2,
        "rules": [
            rule("A", risk_level=["extreme"]),
            rule(require=[{"actor": "x", "min_approvals": 2}], scope=["planet"]),
            CATCH_ALL,
        ],
    }

    assert problems_of(source) == (
        "policy: expected the format version 1, got 2",
        "rules[0].id: 'A' must be 1 to 64 of a-z, 0-9 and -, starting with a letter or digit",
        "rules[0].when.risk_level: 'extreme' is not one of low, medium, high, critical",
        "rules[1].when.scope: 'planet' is not one of single, module, system, global",
        "rules[1].require[0].min_approvals: a named actor gives one approval; expected 1 or "
        "nothing, got 2 (more than one approval needs a group)",
    )


def test_a_policy_error_is_a_value_error_listing_its_problems() -> None:
    error = PolicyError(["a: one", "b: two"])

    assert isinstance(error, ValueError)
    assert error.problems == ("a: one", "b: two")
    assert str(error) == "a: one; b: two"


# --------------------------------------------------------------------------- YAML


def test_a_repeated_key_is_refused_with_both_lines() -> None:
    text = "policy: 1\nrules:\n  - id: a\n    require: []\n    id: b\n"

    assert only_problem(text) == "line 5, column 5: duplicate key 'id' (first at line 3)"


def test_a_repeated_key_in_json_is_refused() -> None:
    text = '{"policy": 1, "rules": [{"id": "a", "require": []}], "policy": 1}'

    assert only_problem(text) == "document: duplicate key 'policy' in a JSON object"


def test_a_yaml_syntax_error_is_named_by_line_and_column() -> None:
    assert only_problem("policy: 1\nrules: [\n") == (
        "line 3, column 1: expected the node content, but found '<stream end>'"
    )


def test_invalid_json_is_reported_as_json_too() -> None:
    problem = only_problem('{"policy": 1,\t"rules": [}')

    assert problem.startswith("line 1, column 14: ")
    assert "(as JSON: Expecting value: line 1 column 25 (char 24))" in problem


def test_a_stream_of_several_documents_is_refused() -> None:
    assert only_problem("policy: 1\n---\npolicy: 1\n") == (
        "line 2, column 1: expected a single document in the stream, but found another document"
    )


def test_bytes_are_read_as_utf_8() -> None:
    assert parse_policy(EXAMPLE.encode()).sha256 == parse_policy(EXAMPLE).sha256
    assert only_problem(b"\xff\xfe") == "document: not UTF-8 text (invalid start byte)"


# --------------------------------------------------------------------------- static rules


def test_the_last_rule_must_have_no_when() -> None:
    source = {"policy": 1, "rules": [rule("a", category=["x"]), rule("last", category=["y"])]}

    assert only_problem(source) == (
        "rules[1].when: the last rule must have no when, so that every request matches a rule; "
        "rule 'last' has one"
    )


def test_only_the_last_rule_may_leave_out_when() -> None:
    source = document(rule("early"), rule("b", category=["y"]))

    assert only_problem(source) == (
        "rules[0]: only the last rule may leave out when; rule 'early' matches every request, "
        "so no rule after it could ever match"
    )


def test_rule_ids_are_unique() -> None:
    source = document(rule("same", category=["a"]), rule("same", category=["b"]))

    assert only_problem(source) == "rules[1].id: 'same' is already the id of rules[0]"


def test_a_rule_that_an_earlier_one_covers_is_named_with_it() -> None:
    source = document(
        rule("accounts", state_type=["account"], risk_level=["high", "critical"]),
        rule(
            "critical-accounts", state_type=["account"], risk_level=["critical"], scope=["global"]
        ),
    )

    assert only_problem(source) == (
        "rules[1]: rule 'critical-accounts' can never match: rules[0] (rule 'accounts') comes "
        "first and matches every request it would"
    )


def test_a_rule_is_shadowed_once_by_the_first_earlier_rule_that_covers_it() -> None:
    source = document(
        rule("a", category=["x"]), rule("b", category=["x", "y"]), rule("c", category=["x"])
    )

    assert problems_of(source) == (
        "rules[2]: rule 'c' can never match: rules[0] (rule 'a') comes first and matches every "
        "request it would",
    )


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param({"category": ["x"]}, {"mutation_type": ["y"]}, id="other-attribute"),
        pytest.param({"category": ["x"]}, {"category": ["x", "y"]}, id="more-values"),
        pytest.param(
            {"category": ["x"], "state_type": ["s"]}, {"category": ["x"]}, id="narrower-earlier"
        ),
        pytest.param({"tags_any": ["pci"]}, {"category": ["x"]}, id="later-without-tags"),
        pytest.param({"tags_any": ["pci"]}, {"tags_any": ["pci", "sox"]}, id="more-tags"),
        pytest.param({"requester_group": ["a"]}, {"category": ["x"]}, id="later-without-groups"),
        pytest.param(
            {"risk_level": ["low", "medium", "high"]}, {"category": ["x"]}, id="some-levels"
        ),
    ],
)
def test_a_rule_that_lets_through_a_request_the_earlier_one_refuses_is_not_shadowed(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    policy = policy_from_document(document(rule("a", **earlier), rule("b", **later)))

    assert [r.id for r in policy.rules] == ["a", "b", "default"]


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param({"tags_any": ["pci", "sox"]}, {"tags_any": ["pci"]}, id="fewer-tags"),
        pytest.param(
            {"requester_group": ["a", "b"]},
            {"requester_group": ["b"], "category": ["x"]},
            id="fewer-groups",
        ),
        pytest.param(
            {"risk_level": ["low", "medium", "high", "critical"], "category": ["x"]},
            {"category": ["x"]},
            id="every-level-covers-none-named",
        ),
        pytest.param(
            {"scope": ["single", "module", "system", "global"], "category": ["x"]},
            {"category": ["x"], "tags_any": ["t"]},
            id="every-scope-covers-none-named",
        ),
    ],
)
def test_a_rule_whose_requests_all_match_the_earlier_one_is_shadowed(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    problem = only_problem(document(rule("a", **earlier), rule("b", **later)))

    assert problem.startswith("rules[1]: rule 'b' can never match: rules[0] (rule 'a')")


def test_a_rule_matching_every_submit_shadows_the_catch_all() -> None:
    source = document(rule("all", risk_level=["low", "medium", "high", "critical"]))

    assert only_problem(source) == (
        "rules[1]: rule 'default' can never match: rules[0] (rule 'all') comes first and "
        "matches every request it would"
    )


# --------------------------------------------------------------------------- the registry


def test_the_registry_check_names_each_unknown_group_and_actor_where_it_is() -> None:
    policy = parse_policy(EXAMPLE)

    assert unregistered_names(policy, groups={"cab"}, actors={"alice"}) == [
        "rules[0].when.requester_group: 'contractors' is not a registered group",
        "rules[0].require[0].group: 'sre' is not a registered group",
        "rules[0].require[1].actor: 'sec-officer' is not a registered actor",
    ]


def test_the_registry_check_passes_when_every_name_exists() -> None:
    policy = parse_policy(EXAMPLE)

    assert unregistered_names(policy, {"cab", "sre", "contractors"}, {"sec-officer"}) == []
