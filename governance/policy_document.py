"""The approval policy document: reading it, its static rules, its registry check, its sha256
and its JSON Schema.

The document is YAML (JSON is accepted, being YAML)::

    policy: 1
    rules:
      - id: critical-accounts
        description: Limits on accounts need SRE and security.
        when: {mutation_type: [raise-limit], risk_level: [high, critical]}
        require:
          - {group: sre, min_approvals: 2, description: Two SREs}
          - {actor: sec-officer}
        pending_for: 72h
      - id: default
        require: [{group: cab}]

:func:`parse_policy` reads the text and :func:`policy_from_document` the document as plain
data (as a database keeps it); both raise :class:`PolicyError` listing every problem found,
each naming where it is (``rules[2].when.risk_level: 'extreme' is not one of low, medium,
high, critical``). Besides the shape, the static rules hold whenever a document is read:
rule ids are unique, the last rule and only it has no ``when``, and no rule is shadowed by
an earlier one (:meth:`governance.policy.PolicyRule.covers`). Whether the groups and actors
it names exist is :func:`unregistered_names`' question, asked against a registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence, Set
from datetime import date, timedelta
from typing import Any, NoReturn

import rfc8785
import yaml

from governance.commands import (
    IDENTIFIER_PATTERN,
    MAX_ID_LENGTH,
    MAX_MIN_APPROVALS,
    MAX_NAME_LENGTH,
    MAX_REQUIREMENTS,
    MAX_TEXT_LENGTH,
    NAME_PATTERN,
    TEXT_PATTERN,
)
from governance.policy import (
    AT_LEAST_ONE,
    ENUMERATED,
    Attribute,
    Condition,
    Policy,
    PolicyRule,
    Step,
)

#: The format version a document states as ``policy``.
POLICY_FORMAT = 1
#: The fields of the document, of a rule and of a step.
DOCUMENT_FIELDS = ("policy", "rules")
RULE_FIELDS = ("id", "description", "when", "require", "pending_for")
STEP_FIELDS = ("group", "actor", "min_approvals", "description")
#: The patterns are searched, as JSON Schema does, so they say ``^`` and end with
#: ``(?![\s\S])`` rather than ``$`` (which also matches before a final newline).
RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}(?![\s\S])"
DURATION_PATTERN = r"^0*[1-9][0-9]*[smhd](?![\s\S])"
#: The longest ``pending_for``: beyond it a request would wait past any useful horizon.
MAX_PENDING_FOR = timedelta(days=36_500)
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
#: Which values a ``when`` attribute lists: identifiers for groups, names for the others
#: (the shapes commands give the same values).
_GROUP_VALUE = (IDENTIFIER_PATTERN, MAX_ID_LENGTH)
_NAME_VALUE = (NAME_PATTERN, MAX_NAME_LENGTH)


class PolicyError(ValueError):
    """A policy document that cannot be applied; ``problems`` says every reason, each
    naming where in the document it is."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


# --------------------------------------------------------------------------- reading


def parse_policy(text: str | bytes) -> Policy:
    """The policy a YAML or JSON document spells, or :class:`PolicyError`."""
    return policy_from_document(load_document(text))


def load_document(text: str | bytes) -> Any:
    """The document as plain data, refusing a mapping that repeats a key.

    A document that starts with ``{`` is read as JSON first: PyYAML refuses tabs where JSON
    allows them, so a JSON file indented with tabs would not read as YAML. What JSON cannot
    read is read as YAML (a flow mapping starts with ``{`` too).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PolicyError([f"document: not UTF-8 text ({exc.reason})"]) from exc
    as_json = None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_json_object, parse_constant=_no_constant)
        except _DuplicateKey as exc:
            raise PolicyError(
                [f"document: duplicate key {_shown(exc.key)} in a JSON object"]
            ) from exc
        except ValueError as exc:
            as_json = str(exc)
    try:
        # _PolicyLoader is a SafeLoader: no Python objects are built from the document.
        return yaml.load(text, Loader=_PolicyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):
            problem = f"{context}, {problem}"  # "expected a single document, but found ..."
        # A document that starts like JSON may have meant to be JSON: say what JSON found.
        also = f" (as JSON: {as_json})" if as_json else ""
        raise PolicyError([f"{where}: {problem}{also}"]) from exc


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


class _PolicyLoader(yaml.SafeLoader):
    """YAML's safe subset, refusing a mapping that repeats a key (which plain YAML loading
    resolves silently, the last one winning: a rule could lose a condition unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            # A merge key (<<) brings another mapping's keys in, for this one to override.
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key, which the safe loader refuses below
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {_shown(key)} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def policy_from_document(document: object) -> Policy:
    """The policy ``document`` (plain data, as :func:`load_document` gives it) spells, with
    its static rules checked, or :class:`PolicyError` listing every problem."""
    problems: list[str] = []
    raw_rules = _top_level(document, problems)
    rules = tuple(
        _rule(raw, f"rules[{index}]", index, problems) for index, raw in enumerate(raw_rules)
    )
    readable = tuple(rule for rule in rules if rule is not None)
    problems.extend(_catch_all_problems(raw_rules))
    problems.extend(_id_problems(readable))
    problems.extend(_shadow_problems(readable))
    if problems or not readable:
        raise PolicyError(problems)
    assert isinstance(document, Mapping)
    try:
        digest = document_sha256(document)
    except ValueError as exc:  # pragma: no cover - a checked document is canonicalisable
        raise PolicyError([f"document: {exc}"]) from exc
    return Policy(rules=readable, document=document, sha256=digest)


def document_sha256(document: Mapping[str, Any]) -> str:
    """The hex sha256 of the RFC 8785 canonical JSON of ``document`` (plain data): the same
    for every spelling of the same document. ValueError when it has no canonical JSON."""
    try:
        material = rfc8785.dumps(document)
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"no canonical JSON (RFC 8785): {exc}") from exc
    return hashlib.sha256(material).hexdigest()


def _top_level(document: object, problems: list[str]) -> list[Any]:
    """The document's rules as written, after checking everything around them."""
    if not isinstance(document, Mapping):
        problems.append(
            f"document: expected a mapping with policy and rules, got {_shown(document)}"
        )
        return []
    _unknown_fields(document, DOCUMENT_FIELDS, "", problems)
    version = document.get("policy")
    if "policy" not in document:
        problems.append(f"policy: required (the format version, {POLICY_FORMAT})")
    elif type(version) is not int or version != POLICY_FORMAT:
        problems.append(
            f"policy: expected the format version {POLICY_FORMAT}, got {_shown(version)}"
        )
    rules = document.get("rules")
    if "rules" not in document:
        problems.append("rules: required (a non-empty list of rules)")
    elif not isinstance(rules, list) or not rules:
        problems.append(f"rules: expected a non-empty list of rules, got {_shown(rules)}")
    else:
        return rules
    return []


def _rule(raw: object, where: str, index: int, problems: list[str]) -> PolicyRule | None:
    """The rule ``raw`` spells, or None after saying in ``problems`` what is wrong with it."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping (a rule), got {_shown(raw)}")
        return None
    before = len(problems)
    _unknown_fields(raw, RULE_FIELDS, where, problems)
    rule_id = None
    if "id" not in raw:
        problems.append(f"{where}.id: required")
    elif _string(raw["id"], f"{where}.id", problems) is not None:
        rule_id = raw["id"]
        if not re.search(RULE_ID_PATTERN, rule_id):
            problems.append(
                f"{where}.id: {_shown(rule_id)} must be 1 to 64 of a-z, 0-9 and -, "
                "starting with a letter or digit"
            )
    description = _text(raw, "description", where, problems)
    when = _when(raw["when"], f"{where}.when", problems) if "when" in raw else None
    steps: list[Step] = []
    if "require" not in raw:
        problems.append(f"{where}.require: required (a list of steps; [] when none is needed)")
    elif not isinstance(raw["require"], list):
        problems.append(f"{where}.require: expected a list of steps, got {_shown(raw['require'])}")
    elif len(raw["require"]) > MAX_REQUIREMENTS:
        problems.append(
            f"{where}.require: expected at most {MAX_REQUIREMENTS} steps, got {len(raw['require'])}"
        )
    else:
        for number, item in enumerate(raw["require"]):
            step = _step(item, f"{where}.require[{number}]", problems)
            if step is not None:
                steps.append(step)
    pending_for = (
        _duration(raw["pending_for"], f"{where}.pending_for", problems)
        if ("pending_for" in raw)
        else None
    )
    if len(problems) > before or rule_id is None:
        return None
    return PolicyRule(
        id=rule_id,
        index=index,
        require=tuple(steps),
        when=when,
        description=description,
        pending_for=pending_for,
    )


def _when(raw: object, where: str, problems: list[str]) -> tuple[Condition, ...] | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping of attributes, got {_shown(raw)}")
        return None
    if not raw:
        problems.append(
            f"{where}: expected at least one attribute; leave when out to match every request"
        )
        return None
    _unknown_fields(raw, tuple(a.value for a in Attribute), where, problems)
    conditions = []
    for attribute in Attribute:
        if attribute.value not in raw:
            continue
        values = _values(raw[attribute.value], attribute, f"{where}.{attribute.value}", problems)
        if values is not None:
            conditions.append(Condition(attribute, values))
    return tuple(conditions)


def _values(
    raw: object, attribute: Attribute, where: str, problems: list[str]
) -> frozenset[str] | None:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: expected a non-empty list of values, got {_shown(raw)}")
        return None
    before = len(problems)
    allowed = ENUMERATED.get(attribute)
    pattern, longest = _GROUP_VALUE if attribute is Attribute.REQUESTER_GROUP else _NAME_VALUE
    seen: set[str] = set()
    for number, value in enumerate(raw):
        if _string(value, f"{where}[{number}]", problems) is None:
            continue
        if allowed is not None and value not in allowed:
            problems.append(f"{where}: {_shown(value)} is not one of {', '.join(allowed)}")
        elif allowed is None:
            _shaped(value, pattern, longest, f"{where}[{number}]", problems)
        if value in seen:
            problems.append(f"{where}: {_shown(value)} is listed twice")
        seen.add(value)
    return frozenset(seen) if len(problems) == before else None


def _step(raw: object, where: str, problems: list[str]) -> Step | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping (a step), got {_shown(raw)}")
        return None
    before = len(problems)
    _unknown_fields(raw, STEP_FIELDS, where, problems)
    if ("group" in raw) == ("actor" in raw):
        problems.append(f"{where}: expected exactly one of group and actor")
    for name in ("group", "actor"):
        if name in raw and _string(raw[name], f"{where}.{name}", problems) is not None:
            _shaped(raw[name], IDENTIFIER_PATTERN, MAX_ID_LENGTH, f"{where}.{name}", problems)
    min_approvals = raw.get("min_approvals", 1)
    if "min_approvals" in raw:
        shown = f"{where}.min_approvals"
        if type(min_approvals) is not int or not 1 <= min_approvals <= MAX_MIN_APPROVALS:
            problems.append(
                f"{shown}: expected an integer from 1 to {MAX_MIN_APPROVALS}, "
                f"got {_shown(min_approvals)}"
            )
        elif "actor" in raw and min_approvals != 1:
            problems.append(
                f"{shown}: a named actor gives one approval; expected 1 or nothing, "
                f"got {min_approvals} (more than one approval needs a group)"
            )
    description = _text(raw, "description", where, problems)
    if len(problems) > before:
        return None
    return Step(
        group=raw.get("group"),
        actor=raw.get("actor"),
        min_approvals=min_approvals,
        description=description,
    )


def _duration(raw: object, where: str, problems: list[str]) -> timedelta | None:
    """A duration ``<integer><s|m|h|d>``, positive and at most :data:`MAX_PENDING_FOR`."""
    if _string(raw, where, problems) is None:
        return None
    assert isinstance(raw, str)
    if not re.search(DURATION_PATTERN, raw):
        problems.append(
            f"{where}: expected a positive whole number of s, m, h or d (like 72h), "
            f"got {_shown(raw)}"
        )
        return None
    digits = raw[:-1].lstrip("0")
    longest = MAX_PENDING_FOR.days
    # Compared as digits first: Python refuses to read an integer of thousands of them.
    if len(digits) > 12 or int(digits) * _UNITS[raw[-1]] > MAX_PENDING_FOR.total_seconds():
        problems.append(f"{where}: expected at most {longest}d, got {_shown(raw)}")
        return None
    return timedelta(seconds=int(digits) * _UNITS[raw[-1]])


def _text(raw: Mapping[str, Any], name: str, where: str, problems: list[str]) -> str | None:
    """An optional free text field (a description)."""
    if name not in raw or _string(raw[name], f"{where}.{name}", problems) is None:
        return None
    value: str = raw[name]
    _shaped(value, TEXT_PATTERN, MAX_TEXT_LENGTH, f"{where}.{name}", problems)
    return value


def _string(value: object, where: str, problems: list[str]) -> str | None:
    if isinstance(value, str):
        return value
    hint = ""
    if isinstance(value, bool | int | float | date) or value is None:
        # YAML reads yes, no, on, off, 12, 1.5, 2024-01-01 and null as other things.
        hint = " (quote it to make it a string)"
    problems.append(f"{where}: expected a string, got {_shown(value)}{hint}")
    return None


def _shaped(value: str, pattern: str, longest: int, where: str, problems: list[str]) -> None:
    """Refuse ``value`` unless it fits ``pattern`` and is at most ``longest`` characters."""
    if len(value) > longest:
        problems.append(f"{where}: expected at most {longest} characters, got {len(value)}")
    elif not re.search(pattern, value):
        what = {
            IDENTIFIER_PATTERN: "a non-blank string without control characters",
            NAME_PATTERN: "a non-blank string without NUL characters",
        }.get(pattern, "text without NUL characters")
        problems.append(f"{where}: expected {what}, got {_shown(value)}")


def _unknown_fields(
    raw: Mapping[Any, Any], known: tuple[str, ...], where: str, problems: list[str]
) -> None:
    for key in raw:
        if key not in known:
            field = f"{where}.{key}" if where else str(key)
            problems.append(f"{field}: unknown field; expected one of {', '.join(known)}")


def _shown(value: object) -> str:
    """``value`` as a message quotes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    return type(value).__name__


# --------------------------------------------------------------------------- static rules


def _catch_all_problems(raw_rules: Sequence[Any]) -> list[str]:
    """The last rule has no ``when``, so every request matches a rule; no other rule lacks
    one, or no rule after it could ever match."""
    problems = []
    last = len(raw_rules) - 1
    for index, raw in enumerate(raw_rules):
        if not isinstance(raw, Mapping):
            continue
        name = f"rule {_shown(raw['id'])}" if isinstance(raw.get("id"), str) else "it"
        if index == last and "when" in raw:
            problems.append(
                f"rules[{index}].when: the last rule must have no when, so that every request "
                f"matches a rule; {name} has one"
            )
        elif index < last and "when" not in raw:
            problems.append(
                f"rules[{index}]: only the last rule may leave out when; {name} matches every "
                "request, so no rule after it could ever match"
            )
    return problems


def _id_problems(rules: Sequence[PolicyRule]) -> list[str]:
    problems = []
    first: dict[str, PolicyRule] = {}
    for rule in rules:
        earlier = first.setdefault(rule.id, rule)
        if earlier is not rule:
            problems.append(
                f"rules[{rule.index}].id: {_shown(rule.id)} is already the id of "
                f"rules[{earlier.index}]"
            )
    return problems


def _shadow_problems(rules: Sequence[PolicyRule]) -> list[str]:
    """Each rule that an earlier one leaves nothing to match, naming the first such earlier
    rule (an earlier rule without ``when`` is the catch-all check's to report)."""
    problems = []
    for position, later in enumerate(rules):
        for earlier in rules[:position]:
            if earlier.when is not None and earlier.covers(later):
                problems.append(
                    f"rules[{later.index}]: rule {_shown(later.id)} can never match: "
                    f"rules[{earlier.index}] (rule {_shown(earlier.id)}) comes first and matches "
                    "every request it would"
                )
                break
    return problems


# --------------------------------------------------------------------------- the registry


def unregistered_names(policy: Policy, groups: Set[str], actors: Set[str]) -> list[str]:
    """Every group and actor ``policy`` names that the registry does not know, each naming
    where: ``groups`` are the groups registered actors are in, ``actors`` the registered
    actor ids. Empty when all exist."""
    problems = []
    for rule in policy.rules:
        where = f"rules[{rule.index}]"
        for group in sorted(rule.condition(Attribute.REQUESTER_GROUP) or ()):
            if group not in groups:
                problems.append(
                    f"{where}.when.requester_group: {_shown(group)} is not a registered group"
                )
        for number, step in enumerate(rule.require):
            if step.group is not None and step.group not in groups:
                problems.append(
                    f"{where}.require[{number}].group: {_shown(step.group)} is not a "
                    "registered group"
                )
            if step.actor is not None and step.actor not in actors:
                problems.append(
                    f"{where}.require[{number}].actor: {_shown(step.actor)} is not a "
                    "registered actor"
                )
    return problems


# --------------------------------------------------------------------------- JSON Schema


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy document, without its ``$schema``,
    ``$id`` and ``title`` (:mod:`governance.schema` adds them).

    It says the document's shape (fields, types, patterns, enumerations); the static rules
    (unique ids, the last rule alone without ``when``, no shadowed rule) and the bound on
    ``pending_for`` are the reader's alone.
    """

    def string(pattern: str, longest: int) -> dict[str, Any]:
        return {"type": "string", "pattern": pattern, "maxLength": longest}

    def values(items: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "uniqueItems": True, "items": items}

    text = string(TEXT_PATTERN, MAX_TEXT_LENGTH)
    identifier = {**string(IDENTIFIER_PATTERN, MAX_ID_LENGTH), "minLength": 1}
    name = {**string(NAME_PATTERN, MAX_NAME_LENGTH), "minLength": 1}
    when_items = {
        attribute.value: values(
            {"enum": list(ENUMERATED[attribute])}
            if attribute in ENUMERATED
            else identifier
            if attribute is Attribute.REQUESTER_GROUP
            else name
        )
        for attribute in Attribute
    }
    for attribute in AT_LEAST_ONE:
        when_items[attribute.value]["description"] = "matches when at least one is the request's"
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(DOCUMENT_FIELDS),
        "properties": {
            "policy": {"const": POLICY_FORMAT, "description": "the format version"},
            "rules": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/Rule"},
                "description": "first match wins; the last rule has no when",
            },
        },
        "$defs": {
            "Rule": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "require"],
                "properties": {
                    "id": {"type": "string", "pattern": RULE_ID_PATTERN},
                    "description": text,
                    "when": {"$ref": "#/$defs/When"},
                    "require": {
                        "type": "array",
                        "maxItems": MAX_REQUIREMENTS,
                        "items": {"$ref": "#/$defs/Step"},
                        "description": "ordered steps; [] when no approval is needed",
                    },
                    "pending_for": {
                        "type": "string",
                        "pattern": DURATION_PATTERN,
                        "description": "the longest a request may wait: a positive number of "
                        f"s, m, h or d, at most {MAX_PENDING_FOR.days}d",
                    },
                },
            },
            "When": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": when_items,
                "description": "every attribute named must match",
            },
            "Step": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "group": identifier,
                    "actor": identifier,
                    "min_approvals": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_MIN_APPROVALS,
                        "default": 1,
                    },
                    "description": text,
                },
                "oneOf": [
                    {"required": ["group"], "not": {"required": ["actor"]}},
                    {
                        "required": ["actor"],
                        "not": {"required": ["group"]},
                        "properties": {"min_approvals": {"const": 1}},
                    },
                ],
            },
        },
    }
