"""The Celery task message that carries a command, encoded and decoded in one place."""

from __future__ import annotations

import json

from governance.parking import ParkCause
from governance.task_message import (
    carried_command,
    decode_task_message,
    encode_task_message,
)
from governance.topology import APPLY_COMMAND_TASK

COMMAND = {"command_id": "c-1", "type": "approve", "request_id": "r-1"}


def test_an_encoded_command_decodes_to_itself() -> None:
    message = encode_task_message(COMMAND, retries=2)
    decoded = decode_task_message(message.headers, message.body, message.content_type)
    assert (decoded.command, decoded.problem) == (COMMAND, None)
    assert message.headers["task"] == APPLY_COMMAND_TASK
    assert message.headers["retries"] == 2
    assert message.headers["id"] == message.task_id


def test_the_body_is_celerys_protocol_two_array() -> None:
    body = json.loads(encode_task_message(COMMAND).body)
    assert body[0] == [COMMAND] and body[1] == {}
    assert set(body[2]) >= {"callbacks", "errbacks", "chain"}


def test_a_message_without_a_task_header_is_not_a_task() -> None:
    decoded = decode_task_message({}, b"[]", "application/json")
    assert decoded.problem == "not a task message (no task header)"


def test_a_message_for_another_task_is_refused_by_name() -> None:
    decoded = decode_task_message({"task": "other.task"}, b"[]", "application/json")
    assert decoded.problem == "unknown task: 'other.task'"


def test_a_body_that_is_not_json_is_undecodable() -> None:
    decoded = decode_task_message({"task": APPLY_COMMAND_TASK}, b"{nope", "application/json")
    assert decoded.problem is not None and decoded.problem.startswith("undecodable message")


def test_another_content_type_is_undecodable() -> None:
    decoded = decode_task_message({"task": APPLY_COMMAND_TASK}, b"x", "application/x-python")
    assert decoded.problem is not None and "content type" in decoded.problem


def test_a_body_of_the_wrong_shape_is_an_invalid_task_message() -> None:
    decoded = decode_task_message({"task": APPLY_COMMAND_TASK}, b"{}", "application/json")
    assert decoded.problem == "invalid task message: the body is not [args, kwargs, embed]"


def test_a_command_given_with_an_extra_keyword_is_refused_but_kept_as_itself() -> None:
    body = json.dumps([[COMMAND], {"urgent": True}, {}])
    decoded = decode_task_message({"task": APPLY_COMMAND_TASK}, body, "application/json")
    assert decoded.problem is not None and "1 keyword argument" in decoded.problem
    assert decoded.carried == COMMAND


def test_only_a_command_object_is_carried() -> None:
    assert carried_command([COMMAND, 2]) == COMMAND
    assert carried_command(["not an object"]) is None
    assert carried_command([]) is None
    assert carried_command("nope") is None


def test_each_problem_names_the_cause_it_is_parked_for() -> None:
    message = encode_task_message(COMMAND)
    causes = [
        decode_task_message(headers, body, content_type).cause
        for headers, body, content_type in (
            ({}, message.body, message.content_type),
            ({"task": "other.task"}, message.body, message.content_type),
            (message.headers, b"\xff", message.content_type),
            (message.headers, message.body, "text/plain"),
            (message.headers, "[1, 2]", message.content_type),
            (message.headers, json.dumps([[COMMAND], {"x": 1}, {}]), message.content_type),
        )
    ]
    assert causes == [
        ParkCause.NOT_A_TASK,
        ParkCause.UNKNOWN_TASK,
        ParkCause.UNDECODABLE,
        ParkCause.UNDECODABLE,
        ParkCause.INVALID_TASK,
        ParkCause.WRONG_ARGUMENTS,
    ]


def test_a_command_carried_as_it_should_be_has_no_park_reason() -> None:
    message = encode_task_message(COMMAND)
    decoded = decode_task_message(message.headers, message.body, message.content_type)
    assert decoded.park_reason is None
