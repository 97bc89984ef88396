"""Outcome events and the exit codes of the contract.

An outcome is the ``transition.applied`` or ``transition.rejected`` event of one command,
as a plain dict in the wire spelling. The exit codes are what ``--wait`` and ``wait``
return, so that a pipeline can branch on them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from governance.events import APPLIED
from governance.proof import command_sha256

EXIT_APPLIED = 0
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_REJECTED = 4
EXIT_TIMEOUT = 5
EXIT_ALTERED = 6  # `governance verify`: the history or its anchor was altered
EXIT_UNAVAILABLE = 7  # a service (PostgreSQL, RabbitMQ) cannot be reached or used

#: How bad each exit code is, worst last: a batch exits with its worst outcome. A command that
#: cannot even be validated is a defect of the input, so it outranks every outcome.
_SEVERITY = (EXIT_APPLIED, EXIT_CONFLICT, EXIT_REJECTED, EXIT_TIMEOUT, EXIT_USAGE)

CONCURRENCY_CONFLICT = "concurrency_conflict"


class OutcomeTimeout(TimeoutError):
    """No outcome event arrived for a command in time, re-sends included.

    The command may still be applied later (it is in the broker); re-sending the same
    command is always safe.
    """

    def __init__(self, command_id: str, timeout: float, attempts: int) -> None:
        super().__init__(
            f"no outcome for command {command_id} within {timeout:g}s ({attempts} send(s))"
        )
        self.command_id = command_id
        self.timeout = timeout
        self.attempts = attempts


class AwaitedCommand:
    """A command whose outcome is awaited: which events may answer it.

    Its answer is an event for its ``command_id`` and its actor that is either
    ``authenticated`` (the worker proved the actor sent the command it answers, and in
    signed mode a ``command_id`` is the actor's own) or carries the ``command_sha256`` of a
    message sent for it (an answer to a sender who was not proved: this very message's, say
    refused because its key was revoked). So neither another actor's command with the same
    ``command_id`` nor an unsigned copy claiming this actor can answer it. Thread-safe.
    """

    def __init__(self, command_id: str, actor_id: str) -> None:
        self.command_id = command_id
        self.actor_id = actor_id
        self._sent: set[str] = set()
        self._lock = threading.Lock()

    def sending(self, message: Mapping[str, Any]) -> None:
        """Note a message about to be sent for this command (each send is signed afresh)."""
        fingerprint = command_sha256(message)
        if fingerprint is not None:
            with self._lock:
                self._sent.add(fingerprint)

    def answered_by(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (verified as a worker's already) is this command's outcome."""
        actor = event.get("actor")
        if event.get("command_id") != self.command_id or not isinstance(actor, Mapping):
            return False
        if actor.get("id") != self.actor_id:
            return False
        if event.get("authenticated") is True:
            return True
        with self._lock:
            return event.get("command_sha256") in self._sent


def is_applied(event: Mapping[str, Any]) -> bool:
    return event.get("event_type") == APPLIED


def rejection_code(event: Mapping[str, Any]) -> str | None:
    """The rejection code of a ``transition.rejected`` event, None for an applied one."""
    rejection = event.get("rejection")
    return rejection.get("code") if isinstance(rejection, Mapping) else None


def exit_code_for(event: Mapping[str, Any] | None) -> int:
    """0 applied, 3 ``concurrency_conflict``, 4 any other rejection, 5 no event (timed out)."""
    if event is None:
        return EXIT_TIMEOUT
    if is_applied(event):
        return EXIT_APPLIED
    if rejection_code(event) == CONCURRENCY_CONFLICT:
        return EXIT_CONFLICT
    return EXIT_REJECTED


def worst_exit_code(codes: Iterable[int]) -> int:
    """The worst of several exit codes (0 for none): 0 < 3 < 4 < 5 < 2."""
    worst = EXIT_APPLIED
    for code in codes:
        if _SEVERITY.index(code) > _SEVERITY.index(worst):
            worst = code
    return worst


def describe(event: Mapping[str, Any]) -> str:
    """One line for people: what happened to the command."""
    request_id = event.get("request_id")
    command_type = event.get("command_type")
    if is_applied(event):
        return (
            f"applied {command_type} on {request_id}: "
            f"{event.get('from_status') or 'new'} -> {event.get('to_status')} "
            f"(revision {event.get('revision')})"
        )
    rejection = event.get("rejection") or {}
    detail = f"rejected {command_type} on {request_id}: {rejection.get('code')}"
    if rejection.get("message"):
        detail += f" - {rejection['message']}"
    return detail
