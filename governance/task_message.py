"""The Celery task message that carries a command: encoded and decoded in this one place.

A command travels as Celery's message protocol 2: the body is the JSON array
``[args, kwargs, embed]`` with the command object as the only positional argument, and the
task's name, id and retry count are headers. The worker's batch consumer decodes messages
itself, the dead-letter replay encodes them, and both use these functions, so they agree
with each other and with ``send_task`` of any Celery client.

Bodies are read by :func:`governance.commands.decode_json` alone: plain JSON, an object
naming a key twice kept marked for validation to refuse. The worker registers it as its
``application/json`` decoder too, so the pool's task path and the retry queue read a
command exactly as the batch step does here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from governance.commands import decode_json
from governance.parking import ParkCause, ParkReason
from governance.topology import APPLY_COMMAND_TASK

CONTENT_TYPE = "application/json"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """A command as a Celery task message: body, headers and the properties to publish with."""

    body: str
    headers: dict[str, Any]
    task_id: str
    content_type: str = CONTENT_TYPE
    content_encoding: str = "utf-8"


def encode_task_message(
    command: Mapping[str, Any],
    *,
    task_id: str | None = None,
    retries: int = 0,
    origin: str = "governance",
    extra_headers: Mapping[str, Any] | None = None,
) -> TaskMessage:
    """The ``governance.apply_command`` task message for ``command``, as ``send_task`` writes
    it (so a worker cannot tell the two apart)."""
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps([[dict(command)], {}, _EMBED], ensure_ascii=False)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": APPLY_COMMAND_TASK,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": retries,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": repr((command.get("command_id"),)),
        "kwargsrepr": "{}",
        "origin": origin,
        **(extra_headers or {}),
    }
    return TaskMessage(body=body, headers=headers, task_id=task_id)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a task message carries: the command, or why it carries none (then ``carried`` is
    the command object it holds in an unusable shape, if any, for the dead-letter queue)."""

    command: object = None
    problem: str | None = None
    carried: Mapping[str, Any] | None = None
    #: With ``problem``: the cause it is parked for.
    cause: ParkCause | None = None

    @property
    def park_reason(self) -> ParkReason | None:
        """Why the message is parked, or None when it carries a command."""
        if self.problem is None:
            return None
        return ParkReason(self.cause or ParkCause.INVALID_TASK, self.problem)


def decode_task_message(
    headers: Mapping[str, Any] | None, body: bytes | str, content_type: str | None
) -> Decoded:
    """The command a ``governance.apply_command`` task message carries, or why it carries
    none."""
    task = (headers or {}).get("task")
    if task is None:
        return Decoded(problem="not a task message (no task header)", cause=ParkCause.NOT_A_TASK)
    if task != APPLY_COMMAND_TASK:
        return Decoded(problem=f"unknown task: {task!r}", cause=ParkCause.UNKNOWN_TASK)
    if content_type != CONTENT_TYPE:
        return Decoded(
            problem=f"undecodable message: content type {content_type!r} is not {CONTENT_TYPE}",
            cause=ParkCause.UNDECODABLE,
        )
    try:
        decoded = decode_json(body)
    except (ValueError, RecursionError) as exc:
        return Decoded(problem=f"undecodable message: {exc}", cause=ParkCause.UNDECODABLE)
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return Decoded(
            problem="invalid task message: the body is not [args, kwargs, embed]",
            cause=ParkCause.INVALID_TASK,
        )
    return decode_arguments(decoded[0], decoded[1])


def decode_arguments(args: object, kwargs: object) -> Decoded:
    """The command a task's decoded arguments carry, or why they carry none."""
    problem = arguments_problem(args, kwargs)
    if problem is not None:
        return Decoded(
            problem=problem, carried=carried_command(args), cause=ParkCause.WRONG_ARGUMENTS
        )
    assert isinstance(args, list | tuple)
    return Decoded(command=args[0])


def arguments_problem(args: object, kwargs: object) -> str | None:
    """Why these task arguments are not "exactly one positional argument", or None."""
    if isinstance(args, list | tuple) and len(args) == 1 and not kwargs:
        return None
    count = len(args) if isinstance(args, list | tuple) else 0
    keywords = len(kwargs) if isinstance(kwargs, dict) else 0
    return (
        f"expected exactly one positional argument (the command object), got {count} "
        f"positional and {keywords} keyword argument(s)"
    )


def carried_command(args: object) -> Mapping[str, Any] | None:
    """The command object among task arguments of the wrong shape (one given with an extra
    keyword argument, say), so that it can be dead-lettered as itself and replayed."""
    if isinstance(args, list | tuple) and args and isinstance(args[0], dict):
        return args[0]
    return None
