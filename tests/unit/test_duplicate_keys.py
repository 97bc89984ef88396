"""Commands are read one way only: a key given twice in any object of a command is refused
naming its path, and a body is plain JSON (no serializer's type markers)."""

from __future__ import annotations

import pickle

import pytest

from governance.commands import (
    InvalidCommand,
    command_id_of,
    decode_json,
    parse_command,
    payload_hash,
)
from governance.task_message import decode_task_message
from governance.topology import APPLY_COMMAND_TASK

APPROVE = (
    '{"command_id": "c-1", "type": "approve", "request_id": "req-1", %s'
    '"expected_revision": 1, "actor": {"id": "alice"}}'
)


def test_a_request_id_given_twice_is_refused_naming_it() -> None:
    payload = decode_json(APPROVE % '"request_id": "req-2", ')

    with pytest.raises(InvalidCommand) as refused:
        parse_command(payload)

    assert refused.value.field == "request_id"


def test_a_key_given_twice_deep_inside_is_refused_naming_its_path() -> None:
    payload = decode_json(APPROVE % '"metadata": {"a": [{"b": 1, "b": 2}]}, ')

    with pytest.raises(InvalidCommand) as refused:
        parse_command(payload)

    assert refused.value.field == "metadata.a[0].b"


def test_a_command_id_given_twice_is_no_usable_command_id() -> None:
    assert command_id_of(decode_json(APPROVE % '"command_id": "c-2", ')) is None


def test_the_same_command_without_the_repeated_key_is_valid() -> None:
    assert parse_command(decode_json(APPROVE % "")).request_id == "req-1"


def test_the_repeated_spelling_is_not_the_same_message_as_the_plain_one() -> None:
    doubled = decode_json(APPROVE % '"request_id": "req-1", ')

    assert doubled == decode_json(APPROVE % "")
    assert payload_hash(doubled) != payload_hash(decode_json(APPROVE % ""))


def test_serializer_type_markers_are_plain_objects() -> None:
    decoded = decode_json('{"x": {"__type__": "bytes", "__value__": "y"}}')

    assert decoded == {"x": {"__type__": "bytes", "__value__": "y"}}


def test_the_marks_survive_pickling() -> None:
    payload = pickle.loads(pickle.dumps(decode_json(APPROVE % '"type": "reject", ')))

    with pytest.raises(InvalidCommand) as refused:
        parse_command(payload)

    assert refused.value.field == "type"


def test_the_task_message_decoder_keeps_the_marks() -> None:
    body = "[[%s], {}, {}]" % (APPROVE % '"request_id": "req-2", ')

    decoded = decode_task_message({"task": APPLY_COMMAND_TASK}, body, "application/json")

    with pytest.raises(InvalidCommand):
        parse_command(decoded.command)


def test_a_dead_letter_keeps_a_key_given_twice_and_is_no_replayable_command() -> None:
    from producer.deadletters import _carried_command
    from worker.deadletter import letter_from_arguments, letter_from_message

    body = "[[%s], {}, {}]" % (APPROVE % '"command_id": "c-2", ')
    headers = {"task": APPLY_COMMAND_TASK}
    by_message = letter_from_message(headers, body.encode(), "application/json")
    command = decode_task_message(headers, body, "application/json").command
    by_arguments = letter_from_arguments([command], {})

    for letter in (by_message, by_arguments):
        assert letter.body.decode().count('"command_id"') == 2
        assert _carried_command(letter.body) is None


def test_a_command_without_repeated_keys_is_dead_lettered_as_before() -> None:
    from worker.deadletter import letter_from_arguments

    command = decode_json(APPROVE % "")

    assert decode_json(letter_from_arguments([command], {}).body) == command
