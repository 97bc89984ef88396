"""Why a message was parked on the dead-letter queue: a closed set of causes.

The worker parks a message for one of these causes and nothing else; each letter carries the
cause (its value, in the ``x-governance-dead-letter-cause`` header) beside the reason, a
sentence that says what happened to this message in particular. Readers (``governance dlq``,
the metrics) go by the cause and show the sentence; nothing parses the sentence back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ParkCause(StrEnum):
    """Why a message was parked. The values are what the cause header carries on the wire
    and the ``cause`` label of the dead-letter metric: stable, documented in the README."""

    #: Not a task message at all: no ``task`` header.
    NOT_A_TASK = "not_a_task"
    #: A task message for a task this worker does not run.
    UNKNOWN_TASK = "unknown_task"
    #: The body cannot be decoded (not JSON, or another content type than JSON).
    UNDECODABLE = "undecodable"
    #: A task message of the wrong form (the body is not ``[args, kwargs, embed]``).
    INVALID_TASK = "invalid_task"
    #: The task's arguments are not exactly one positional argument, the command object.
    WRONG_ARGUMENTS = "wrong_arguments"
    #: The argument is no object with a usable ``command_id``: no event can answer it.
    NOT_A_COMMAND = "not_a_command"
    #: The handler kept failing on this message (or failed on one that cannot be retried).
    POISON = "poison"
    #: The worker was lost during each of the message's last deliveries.
    LOST_DELIVERIES = "lost_deliveries"
    #: Applying it kept ending in a statement or lock timeout or an internal error, more
    #: often than a passing fault of the database would explain.
    KEEPS_TIMING_OUT = "keeps_timing_out"


@dataclass(frozen=True, slots=True)
class ParkReason:
    """Why one message is parked: its cause and the sentence that tells it."""

    cause: ParkCause
    text: str

    def __str__(self) -> str:
        return self.text


def cause_from_header(value: object) -> ParkCause | None:
    """The cause a letter's header names, or None (a letter parked by an earlier version,
    or by hand, carries none)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        return ParkCause(value)
    except ValueError:
        return None
