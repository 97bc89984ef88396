"""The dead-letter queue: messages that cannot be answered by an event, kept with a reason.

Every path that parks a message (the consumer's decode hooks, the task, the batch consumer,
the bounded-redelivery policy) comes through :func:`publish`, and what is kept is the same
for all: the command object itself where the message carries one, so that
``governance dlq replay`` can send it again; the raw body otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kombu

from governance.task_message import carried_command, decode_task_message
from governance.topology import DEAD_LETTER_QUEUE, DEAD_LETTER_REASON_HEADER
from worker.outbox import EventPublisher

DEAD_LETTERS = kombu.Queue(
    DEAD_LETTER_QUEUE, exchange=kombu.Exchange(""), routing_key=DEAD_LETTER_QUEUE, durable=True
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
    encoded = json.dumps(command, ensure_ascii=False, default=repr)
    return Letter(encoded.encode("utf-8", "surrogatepass"), "application/json")


def letter_from_message(
    headers: Mapping[str, Any] | None, body: bytes | str, content_type: str | None
) -> Letter:
    """What to keep of a raw broker message: the command it carries, or its body as is."""
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape")
    decoded = decode_task_message(headers, raw, content_type)
    command = decoded.command if decoded.problem is None else decoded.carried
    if isinstance(command, dict):
        return _command_letter(command)
    return Letter(raw, content_type or "application/octet-stream")


def letter_from_arguments(args: Any, kwargs: Any) -> Letter:
    """What to keep of a task the worker has already decoded into its arguments."""
    command = carried_command(args)
    if command is not None:
        return _command_letter(command)
    encoded = json.dumps({"args": args, "kwargs": kwargs}, default=repr, ensure_ascii=False)
    return Letter(encoded.encode("utf-8", "surrogatepass"), "application/json")


def publish(
    publisher: EventPublisher, letter: Letter, reason: str, headers: Mapping[str, Any]
) -> None:
    """Put ``letter`` on ``governance.commands.dead`` with the reason in a header; returns once
    the broker confirmed it."""
    publisher.publish_raw(
        letter.body,
        exchange="",
        routing_key=DEAD_LETTER_QUEUE,
        content_type=letter.content_type,
        headers={**headers, DEAD_LETTER_REASON_HEADER: reason[:MAX_REASON_LENGTH]},
        declare=[DEAD_LETTERS],
    )
