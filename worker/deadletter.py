"""The dead-letter queue: messages that cannot be answered by an event, kept with a reason.

Every path that parks a message (the consumer's decode hooks, the task, the batch consumer,
the bounded-redelivery policy) comes through :func:`publish`, and what is kept is the same
for all: the command object itself where the message carries one, so that
``governance dlq replay`` can send it again; the raw body otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import kombu

from governance.commands import encode_json
from governance.parking import ParkReason
from governance.task_message import CONTENT_TYPE, carried_command, decode_task_message
from governance.topology import (
    APPLY_COMMAND_TASK,
    DEAD_LETTER_CAUSE_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON_HEADER,
    queue_arguments,
    queue_type_from,
)
from worker.outbox import EventPublisher

#: Declared as the worker's settings say (``GOVERNANCE_QUEUE_TYPE``), like every worker queue.
DEAD_LETTERS = kombu.Queue(
    DEAD_LETTER_QUEUE,
    exchange=kombu.Exchange(""),
    routing_key=DEAD_LETTER_QUEUE,
    durable=True,
    queue_arguments=queue_arguments(DEAD_LETTER_QUEUE, queue_type_from(os.environ)),
)

#: Longest reason kept in the header (a reason can quote a message's contents).
MAX_REASON_LENGTH = 1000


class Letter:
    """What is kept of a parked message: its body and content type."""

    __slots__ = ("body", "content_type")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type


def _command_letter(command: Mapping[str, Any]) -> Letter:
    # Every member as it came, a key given twice included: replayed, it is refused again.
    encoded = encode_json(command)
    return Letter(encoded.encode("utf-8", "surrogatepass"), "application/json")


def _carried(args: Any, kwargs: Any) -> Mapping[str, Any] | None:
    """The command object among task arguments of the wrong shape: the first positional
    argument, or else the one keyword argument that is a command object (a client that sent
    ``kwargs={"command": {...}, "force": True}``), so that it is parked as itself and can be
    replayed."""
    command = carried_command(args)
    if command is not None:
        return command
    if not isinstance(kwargs, Mapping):
        return None
    commands = [
        value
        for value in kwargs.values()
        if isinstance(value, dict) and isinstance(value.get("command_id"), str)
    ]
    return commands[0] if len(commands) == 1 else None


def _task_arguments(raw: bytes) -> tuple[Any, Any]:
    """The ``args`` and ``kwargs`` of a task message's body (empty when it has none)."""
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return [], {}
    if isinstance(decoded, list) and len(decoded) == 3:
        return decoded[0], decoded[1]
    return [], {}


def letter_from_message(
    headers: Mapping[str, Any] | None, body: bytes | str, content_type: str | None
) -> Letter:
    """What to keep of a raw broker message: the command it carries, or its body as is."""
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape")
    decoded = decode_task_message(headers, raw, content_type)
    command = decoded.command if decoded.problem is None else decoded.carried
    is_task = (headers or {}).get("task") == APPLY_COMMAND_TASK and content_type == CONTENT_TYPE
    if command is None and decoded.problem is not None and is_task:
        # A task of the wrong shape whose command came as a keyword argument.
        command = _carried(*_task_arguments(raw))
    if isinstance(command, dict):
        return _command_letter(command)
    return Letter(raw, content_type or "application/octet-stream")


def letter_from_arguments(args: Any, kwargs: Any) -> Letter:
    """What to keep of a task the worker has already decoded into its arguments."""
    command = _carried(args, kwargs)
    if command is not None:
        return _command_letter(command)
    encoded = json.dumps({"args": args, "kwargs": kwargs}, default=repr, ensure_ascii=False)
    return Letter(encoded.encode("utf-8", "surrogatepass"), "application/json")


def publish(
    publisher: EventPublisher, letter: Letter, reason: ParkReason, headers: Mapping[str, Any]
) -> None:
    """Put ``letter`` on ``governance.commands.dead`` with its cause and the sentence of its
    reason in headers; returns once the broker confirmed it."""
    publisher.publish_raw(
        letter.body,
        exchange="",
        routing_key=DEAD_LETTER_QUEUE,
        content_type=letter.content_type,
        headers={
            **headers,
            DEAD_LETTER_CAUSE_HEADER: reason.cause.value,
            DEAD_LETTER_REASON_HEADER: reason.text[:MAX_REASON_LENGTH],
        },
        declare=[DEAD_LETTERS],
    )
