"""The checked-in contract (contract/): generated from the wire models, never edited by hand;
its JSON Schemas accept what the service accepts and refuse what it refuses; its AsyncAPI
document names the channels and their messages; ``governance schema`` prints them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from governance.codec import command_to_dict
from governance.commands import parse_command
from governance.events import with_sequence
from governance.schema import (
    asyncapi_document,
    documents,
    render,
    schema_named,
    schema_names,
    task_body_schema,
)
from governance.task_message import encode_task_message
from governance.topology import (
    APPLY_COMMAND_TASK,
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON_HEADER,
    EVENTS_EXCHANGE,
)
from governance_cli.schema import schema
from tests.support.events import published

from .builders import ALL_TYPES, THREE_APPROVERS, command_payload, submit_payload, valid_commands
from .test_events import approve_event, conflict_event, unreadable_command_event

CONTRACT = Path(__file__).resolve().parents[2] / "contract"
REGENERATE = "governance schema --write contract"
VALID_COMMANDS = valid_commands()


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema_named(name))


def accepts(name: str, instance: Any) -> bool:
    return validator(name).is_valid(instance)


# --------------------------------------------------------------------------- drift


@pytest.mark.parametrize("relative", sorted(documents()))
def test_a_checked_in_document_is_what_generation_produces_now(relative: str) -> None:
    checked_in = CONTRACT / relative

    assert checked_in.is_file(), f"{checked_in} is missing; regenerate with `{REGENERATE}`"
    assert checked_in.read_text(encoding="utf-8") == render(documents()[relative]), (
        f"{checked_in} is out of date; regenerate with `{REGENERATE}`"
    )


def test_the_contract_directory_holds_nothing_generation_does_not_produce() -> None:
    present = {str(path.relative_to(CONTRACT)) for path in CONTRACT.rglob("*.json")}

    assert present == set(documents()), f"stale files; regenerate with `{REGENERATE}`"


def test_generation_is_deterministic() -> None:
    assert [render(d) for d in documents().values()] == [render(d) for d in documents().values()]


def test_a_rendered_document_has_sorted_keys_two_space_indent_and_a_final_newline() -> None:
    text = render({"b": [1], "a": {"c": None}})

    assert text == '{\n  "a": {\n    "c": null\n  },\n  "b": [\n    1\n  ]\n}\n'


# --------------------------------------------------------------------------- JSON Schemas


@pytest.mark.parametrize("name", [*schema_names(), "task.apply_command"])
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    document = task_body_schema() if name == "task.apply_command" else schema_named(name)

    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_a_command_schema_accepts_a_valid_command_of_its_type(type_: str) -> None:
    payload = VALID_COMMANDS[type_]

    assert accepts(type_, payload)
    assert accepts("command", payload)


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_a_command_schema_accepts_the_wire_form_of_a_parsed_command(type_: str) -> None:
    assert accepts(type_, command_to_dict(parse_command(copy.deepcopy(VALID_COMMANDS[type_]))))


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_a_command_schema_refuses_a_command_of_another_type(type_: str) -> None:
    other = "approve" if type_ == "submit" else "submit"

    assert not accepts(type_, VALID_COMMANDS[other])


def without(payload: dict[str, Any], *path: str) -> dict[str, Any]:
    result = copy.deepcopy(payload)
    target = result
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return result


def with_value(payload: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    result = copy.deepcopy(payload)
    target = result
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return result


APPROVE = command_payload("approve", expected_revision=3)
SUBMIT = submit_payload(approval_requirements=THREE_APPROVERS)
INVALID_COMMANDS = [
    pytest.param("approve", without(APPROVE, "expected_revision"), id="no-expected-revision"),
    pytest.param("approve", with_value(APPROVE, "high", "priority"), id="unknown-field"),
    pytest.param("approve", with_value(APPROVE, "c" * 129, "command_id"), id="long-command-id"),
    pytest.param("approve", with_value(APPROVE, "   ", "command_id"), id="blank-command-id"),
    pytest.param("approve", with_value(APPROVE, "cmd\n1", "command_id"), id="control-character"),
    pytest.param("approve", with_value(APPROVE, "req 42", "request_id"), id="request-id-space"),
    pytest.param("approve", with_value(APPROVE, -1, "expected_revision"), id="negative-revision"),
    pytest.param("approve", with_value(APPROVE, "robot", "actor", "type"), id="actor-type"),
    pytest.param("approve", with_value(APPROVE, {"note": "x"}, "args"), id="args-on-approve"),
    pytest.param("approve", with_value(APPROVE, "ok\x00", "reason"), id="nul-in-reason"),
    pytest.param("submit", without(SUBMIT, "args", "intent"), id="no-intent"),
    pytest.param("submit", with_value(SUBMIT, 1, "expected_revision"), id="submit-revision"),
    pytest.param("submit", with_value(SUBMIT, "rejected", "args", "initial_status"), id="status"),
    pytest.param("submit", with_value(SUBMIT, ["t"] * 65, "args", "intent", "tags"), id="tags"),
    pytest.param(
        "submit",
        with_value(SUBMIT, [{"approver_id": "bob", "weight": 2}], "args", "approval_requirements"),
        id="unknown-requirement-field",
    ),
    pytest.param(
        "resolve_version",
        with_value(command_payload("resolve_version"), "later", "args", "strategy"),
        id="unknown-strategy",
    ),
    pytest.param(
        "supersede", without(command_payload("supersede"), "args"), id="supersede-without-args"
    ),
]


@pytest.mark.parametrize(("type_", "payload"), INVALID_COMMANDS)
def test_a_command_schema_refuses_what_validation_refuses(
    type_: str, payload: dict[str, Any]
) -> None:
    assert not accepts(type_, payload)
    assert not accepts("command", payload)


@pytest.mark.parametrize(
    ("name", "build"),
    [
        pytest.param("transition.applied", approve_event, id="applied"),
        pytest.param("transition.rejected", conflict_event, id="rejected"),
        pytest.param("transition.rejected", unreadable_command_event, id="rejected-unreadable"),
    ],
)
def test_an_event_schema_accepts_a_published_event_and_refuses_a_broken_one(
    name: str, build: Any
) -> None:
    event = published(build(), 12)

    assert accepts(name, event)
    assert not accepts(name, without(event, "proof"))
    assert not accepts(name, without(event, "sequence"))
    assert not accepts(name, with_value(event, "yes", "authenticated"))
    assert not accepts(name, {**event, "extra": 1})


def test_the_applied_schema_refuses_a_rejected_event() -> None:
    assert not accepts("transition.applied", with_sequence(conflict_event(), 1))


def test_the_task_body_schema_accepts_a_task_message_carrying_a_command() -> None:
    message = encode_task_message(VALID_COMMANDS["approve"], task_id="t-1")

    assert Draft202012Validator(task_body_schema()).is_valid(json.loads(message.body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([[], {"command": VALID_COMMANDS["approve"]}, {}], id="command-as-kwarg"),
        pytest.param([[VALID_COMMANDS["approve"], 1], {}, {}], id="two-positional-arguments"),
        pytest.param([[{"command_id": "c-1"}], {}, {}], id="not-a-command"),
        pytest.param({"command": VALID_COMMANDS["approve"]}, id="not-an-array"),
    ],
)
def test_the_task_body_schema_refuses_a_body_the_worker_dead_letters(body: Any) -> None:
    assert not Draft202012Validator(task_body_schema()).is_valid(body)


# --------------------------------------------------------------------------- AsyncAPI


def resolve(document: dict[str, Any], reference: str) -> Any:
    target: Any = document
    for part in reference.removeprefix("#/").split("/"):
        target = target[part]
    return target


def test_the_asyncapi_document_is_asyncapi_3() -> None:
    assert asyncapi_document()["asyncapi"] == "3.0.0"


def test_the_asyncapi_document_has_the_command_event_and_dead_letter_channels() -> None:
    channels = asyncapi_document()["channels"]

    assert {c["address"]: sorted(c["messages"]) for c in channels.values()} == {
        COMMANDS_QUEUE: ["applyCommand"],
        EVENTS_EXCHANGE: ["transitionApplied", "transitionRejected"],
        DEAD_LETTER_QUEUE: ["deadLetter"],
    }
    assert channels["events"]["bindings"]["amqp"]["exchange"]["type"] == "topic"


def test_every_reference_of_the_asyncapi_document_resolves() -> None:
    document = asyncapi_document()
    references: list[str] = []

    def collect(value: Any, in_schema: bool) -> None:
        if isinstance(value, dict):
            if "$ref" in value and not in_schema:
                references.append(value["$ref"])
            for key, item in value.items():
                collect(item, in_schema or key == "schema")
        elif isinstance(value, list):
            for item in value:
                collect(item, in_schema)

    collect(document, in_schema=False)

    assert references
    for reference in references:
        assert resolve(document, reference), reference


def test_a_command_message_is_a_celery_task_message_of_the_apply_command_task() -> None:
    message = asyncapi_document()["components"]["messages"]["applyCommand"]

    assert message["headers"]["properties"]["task"] == {"const": APPLY_COMMAND_TASK}
    assert set(message["headers"]["required"]) == {"task", "id"}
    assert message["payload"] == {"$ref": "#/components/schemas/task.apply_command"}


def test_the_event_messages_carry_the_event_schemas() -> None:
    document = asyncapi_document()
    messages = document["components"]["messages"]

    for message, name in (
        ("transitionApplied", "transition.applied"),
        ("transitionRejected", "transition.rejected"),
    ):
        payload = resolve(document, messages[message]["payload"]["$ref"])
        assert payload["schema"] == schema_named(name)
        assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"


def test_a_dead_letter_carries_its_reason_in_a_header() -> None:
    headers = asyncapi_document()["components"]["messages"]["deadLetter"]["headers"]

    assert headers["required"] == [DEAD_LETTER_REASON_HEADER]


# --------------------------------------------------------------------------- the CLI


def test_governance_schema_without_a_type_prints_the_asyncapi_document() -> None:
    result = CliRunner().invoke(schema, [])

    assert result.exit_code == 0
    assert result.output == render(asyncapi_document())


@pytest.mark.parametrize("name", ["approve", "submit", "command", "transition.applied"])
def test_governance_schema_with_a_type_prints_its_schema(name: str) -> None:
    result = CliRunner().invoke(schema, [name])

    assert result.exit_code == 0
    assert json.loads(result.output) == schema_named(name)


def test_governance_schema_with_an_unknown_type_exits_2_naming_the_choices() -> None:
    result = CliRunner().invoke(schema, ["approve_all"])

    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("Error: unknown schema 'approve_all'; expected one of submit, ")
    assert line.endswith("command, transition.applied, transition.rejected, policy")


def test_governance_schema_write_produces_the_checked_in_contract(tmp_path: Path) -> None:
    result = CliRunner().invoke(schema, ["--write", str(tmp_path)])

    assert result.exit_code == 0
    for relative in documents():
        assert (tmp_path / relative).read_text(encoding="utf-8") == (CONTRACT / relative).read_text(
            encoding="utf-8"
        )


def test_governance_schema_refuses_a_type_and_write_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(schema, ["approve", "--write", str(tmp_path)])

    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1


def test_the_asyncapi_document_alone_tells_a_subscriber_author_what_the_wire_holds() -> None:
    document = asyncapi_document()
    events = document["channels"]["events"]
    applied = document["components"]["messages"]["transitionApplied"]
    commands = document["channels"]["commands"]["description"]

    assert events["bindings"]["amqp"]["exchange"]["durable"] is True
    assert "message_id = the event's event_id" in applied["description"]
    assert "deduplicates by event_id" in applied["description"]
    assert "sequence" in applied["headers"]["properties"]
    assert "RFC 8785" in commands and "Ed25519" in commands and "webauthn" in commands
