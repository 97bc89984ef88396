"""The dead-letter queue ``governance.commands.dead``: list, show, replay and purge.

A message lands there when no event can answer it (it is not a command, or its handler
kept failing). Each carries its cause (one of :class:`governance.parking.ParkCause`'s values)
in the ``x-governance-dead-letter-cause`` header, the reason (a sentence about this message)
in the ``x-governance-dead-letter-reason`` header, and its body as it arrived (for a task
whose handler failed: the command object as JSON).

Reading is non-destructive: messages are fetched unacknowledged and returned to the queue
when the channel closes, so RabbitMQ puts them back where they were. Replay republishes a
command as an ordinary ``governance.apply_command`` task message on ``governance.commands``
(with publisher confirms) and only then removes it from the dead-letter queue; the worker's
ledger makes a replay of an already applied command harmless (same ``command_id``, same
outcome). A letter that carries no command is never replayed: it would only be parked again,
its reason lost.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kombu

from governance.commands import command_id_of, decode_json
from governance.parking import ParkCause, cause_from_header
from governance.task_message import encode_task_message
from governance.topology import (
    COMMANDS_QUEUE,
    DEAD_LETTER_CAUSE_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON_HEADER,
)
from producer._amqp import ensure_declared, worker_queue

DEAD_LETTERS = worker_queue(DEAD_LETTER_QUEUE)
COMMANDS = worker_queue(COMMANDS_QUEUE)
COMMANDS_EXCHANGE = COMMANDS.exchange


class DeadLetterError(Exception):
    """A dead letter that cannot be found or replayed; the message says which and why."""


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter queue."""

    #: The command's ``command_id`` when the body is (or carries) a command object, else a
    #: digest of the body (``sha256:<hex>``): how ``show``, ``replay`` and ``purge`` name it.
    key: str
    reason: str
    body: bytes
    content_type: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    #: Why it was parked, from its cause header; None for a letter that names none (parked
    #: by an earlier version, or put there by hand).
    cause: ParkCause | None = None

    @property
    def command(self) -> dict[str, Any] | None:
        """The body as a command object, or None when it is not a JSON object."""
        return _as_object(self.body)

    @property
    def command_id(self) -> str | None:
        command = self.command
        value = command.get("command_id") if command is not None else None
        if isinstance(value, str):
            return value
        carried = self.carried
        return str(carried["command_id"]) if carried is not None else None

    @property
    def carried(self) -> dict[str, Any] | None:
        """The command a replay sends, or None when there is none to send."""
        return _carried_command(self.body)

    @property
    def replayable(self) -> bool:
        """Whether replaying it can do any good: it carries a command with a usable
        ``command_id``, so the worker answers it with an event instead of parking it again."""
        return self.carried is not None

    def summary(self) -> dict[str, Any]:
        """What ``list`` shows of it."""
        command = self.command or {}
        return {
            "key": self.key,
            "command_id": self.command_id,
            "type": command.get("type") if isinstance(command.get("type"), str) else None,
            "request_id": command.get("request_id")
            if isinstance(command.get("request_id"), str)
            else None,
            "cause": self.cause.value if self.cause is not None else None,
            "reason": self.reason,
            "size": len(self.body),
        }

    def detail(self) -> dict[str, Any]:
        """What ``show`` prints: the summary, the headers and the body (as JSON where it is)."""
        command = self.command
        body: Any
        if command is not None:
            body = command
        else:
            body = self.body.decode("utf-8", "backslashreplace")[:10_000]
        return {
            **self.summary(),
            "content_type": self.content_type,
            "headers": {k: _printable(v) for k, v in self.headers.items()},
            "body": body,
        }


def _as_object(body: bytes) -> dict[str, Any] | None:
    try:
        # As the worker reads it: a command_id given twice is no usable command_id, so such
        # a letter is never replayed as a command.
        decoded = decode_json(body)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def _carried_command(body: bytes) -> dict[str, Any] | None:
    """The command object ``body`` is, or the one inside a task's arguments the worker kept
    as they arrived (``{"args": [...], "kwargs": {...}}``: a task of the wrong shape, parked
    that way by workers of earlier versions); None when there is no command with a usable
    ``command_id`` in it."""
    decoded = _as_object(body)
    if decoded is None:
        return None
    if command_id_of(decoded) is not None:
        return decoded
    if set(decoded) != {"args", "kwargs"}:
        return None
    args, kwargs = decoded["args"], decoded["kwargs"]
    candidates = [args[0]] if isinstance(args, list) and args else []
    if isinstance(kwargs, dict):
        candidates += list(kwargs.values())
    commands = [c for c in candidates if isinstance(c, dict) and command_id_of(c) is not None]
    return commands[0] if len(commands) == 1 else None


def _key_of(body: bytes) -> str:
    command = _as_object(body)
    if command is not None and isinstance(command.get("command_id"), str):
        return str(command["command_id"])
    carried = _carried_command(body)
    if carried is not None:
        return str(carried["command_id"])
    return "sha256:" + hashlib.sha256(body).hexdigest()[:16]


def _to_dead_letter(message: Any) -> DeadLetter:
    raw = message.body
    body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
    headers = dict(message.headers or {})
    reason = headers.get(DEAD_LETTER_REASON_HEADER)
    return DeadLetter(
        key=_key_of(body),
        reason=_printable(reason) if reason is not None else "",
        body=body,
        content_type=message.content_type,
        headers=headers,
        cause=cause_from_header(headers.get(DEAD_LETTER_CAUSE_HEADER)),
    )


@dataclass(frozen=True)
class Replay:
    """What a replay did: the letters sent again (now gone from the queue) and those skipped
    because they carry no command (still in the queue)."""

    replayed: list[DeadLetter]
    skipped: list[DeadLetter]


class DeadLetterQueue:
    """The dead-letter queue on one broker."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url

    @contextmanager
    def _fetched(self) -> Iterator[tuple[kombu.Connection, list[tuple[Any, DeadLetter]]]]:
        """Every message of the queue, held unacknowledged until the block ends."""
        with kombu.Connection(
            self.broker_url, connect_timeout=10, transport_options={"confirm_publish": True}
        ) as connection:
            # Looked up, declared only where no worker has yet: an operator's broker user
            # may read the queue, not declare it.
            ensure_declared(connection, DEAD_LETTERS)
            channel = connection.channel()
            queue = DEAD_LETTERS(channel)
            held: list[tuple[Any, DeadLetter]] = []
            try:
                while (message := queue.get(no_ack=False, accept=None)) is not None:
                    held.append((message, _to_dead_letter(message)))
                yield connection, held
            finally:
                # Closing the channel returns what was not acknowledged to the queue.
                channel.close()

    def list(self) -> list[DeadLetter]:
        """Every dead letter, oldest first; the queue is left as it was."""
        with self._fetched() as (_, held):
            return [letter for _, letter in held]

    def show(self, key: str) -> DeadLetter:
        """The first dead letter named ``key``."""
        for letter in self.list():
            if letter.key == key:
                return letter
        raise DeadLetterError(f"no dead letter {key}")

    def replay(self, keys: Iterable[str] | None = None) -> Replay:
        """Republish the named dead letters (all when ``keys`` is None) as commands and
        remove them from the queue.

        With ``keys`` None, a letter that carries no command (it could only be dead-lettered
        again, losing its reason) is skipped and left where it is, reason intact. Naming one
        raises :class:`DeadLetterError` before anything is replayed, as does naming a letter
        that is missing.
        """
        wanted = None if keys is None else list(dict.fromkeys(keys))
        with self._fetched() as (connection, held):
            chosen = _choose(held, wanted)
            skipped = [letter for _, letter in chosen if not letter.replayable]
            if wanted is not None and skipped:
                raise DeadLetterError(
                    "not a command object, cannot be replayed: "
                    + ", ".join(letter.key for letter in skipped)
                )
            ensure_declared(connection, COMMANDS)
            producer = kombu.Producer(connection.channel())
            replayed = []
            for message, letter in chosen:
                command = letter.carried
                if command is None:
                    continue  # unacknowledged: back to its place when the channel closes
                publish_command(producer, command)
                message.ack()
                replayed.append(letter)
            return Replay(replayed=replayed, skipped=skipped)

    def purge(self, keys: Iterable[str] | None = None) -> builtins.list[DeadLetter]:
        """Remove the named dead letters (all when ``keys`` is None); return those removed."""
        wanted = None if keys is None else list(dict.fromkeys(keys))
        with self._fetched() as (_, held):
            chosen = _choose(held, wanted)
            for message, _ in chosen:
                message.ack()
            return [letter for _, letter in chosen]


def _choose(
    held: list[tuple[Any, DeadLetter]], wanted: list[str] | None
) -> list[tuple[Any, DeadLetter]]:
    if wanted is None:
        return list(held)
    present = {letter.key for _, letter in held}
    missing = [key for key in wanted if key not in present]
    if missing:
        raise DeadLetterError("no dead letter " + ", ".join(missing))
    keys = set(wanted)
    return [(message, letter) for message, letter in held if letter.key in keys]


def publish_command(producer: kombu.Producer, command: dict[str, Any]) -> str:
    """Publish ``command`` as a Celery (protocol 2) ``governance.apply_command`` task message,
    exactly as ``send_task`` would; on a connection opened with ``confirm_publish`` it
    returns once the broker confirmed it. Returns the task id."""
    message = encode_task_message(command, origin="governance-dlq")
    producer.publish(
        message.body,
        exchange=COMMANDS_EXCHANGE,
        routing_key=COMMANDS_QUEUE,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=2,
        correlation_id=message.task_id,
        headers=message.headers,
    )
    return message.task_id
