"""Sending a batch of commands read from JSON lines, and collecting every outcome."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from governance.commands import Command, InvalidCommand, decode_json, parse_command
from governance.topology import DEFAULT_AUDIENCE
from producer.client import GovernanceClient
from producer.keys import SigningKey
from producer.outcomes import (
    EXIT_APPLIED,
    EXIT_CONFLICT,
    EXIT_REJECTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    exit_code_for,
    worst_exit_code,
)
from producer.signing import signature_problem


@dataclass(frozen=True)
class BatchLine:
    """One line of the input: a valid command (and what is sent for it), or why it is not one."""

    line: int
    command: Command | None = None
    error: str | None = None
    #: What is sent: the line's object as given when it stays signed as it is, else the
    #: validated command (which the client signs when it has a key).
    payload: Command | dict[str, Any] | None = None


def load_commands(
    lines: Iterable[str],
    key: SigningKey | None = None,
    *,
    keep_signatures: bool = False,
    audience: str = DEFAULT_AUDIENCE,
) -> list[BatchLine]:
    """Parse and validate JSON lines (blank lines and ``#`` comments are skipped), as plain
    JSON in which a key given twice is invalid.

    With ``key`` every line is signed with it; a line already signed with it is verified
    first (its actor, its ``audience``, its signature against the key's public key) and
    refused when it does not verify, else signed afresh; a line signed with another key is
    refused unless ``keep_signatures``, and then sent exactly as it is. A line for another
    actor than the key's is refused.
    """
    parsed: list[BatchLine] = []
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            raw = decode_json(stripped)
            command = parse_command(raw)
        except json.JSONDecodeError as exc:
            parsed.append(BatchLine(number, error=f"not JSON: {exc.msg}"))
            continue
        except RecursionError:
            parsed.append(BatchLine(number, error="not a command: nested too deeply"))
            continue
        except InvalidCommand as exc:
            parsed.append(BatchLine(number, error=str(exc)))
            continue
        problem, payload = _what_to_send(raw, command, key, keep_signatures, audience)
        if problem is not None:
            parsed.append(BatchLine(number, error=problem))
        else:
            parsed.append(BatchLine(number, command=command, payload=payload))
    return parsed


def _what_to_send(
    raw: dict[str, Any],
    command: Command,
    key: SigningKey | None,
    keep_signatures: bool,
    audience: str,
) -> tuple[str | None, Command | dict[str, Any]]:
    if command.auth is not None:
        if key is not None and command.auth.key_id == key.key_id:
            # Claims to be ours: it must be, before it is sent or signed afresh.
            problem = signature_problem(raw, key, audience=audience)
            if problem is not None:
                return problem, raw
            if keep_signatures:
                return None, raw
        elif key is None or keep_signatures:
            return None, raw
        if command.auth.key_id != key.key_id:
            return (
                f"auth: already signed with key {command.auth.key_id}, not {key.key_id} "
                "(--keep-signatures sends it as signed)",
                raw,
            )
        # Signed with our own key: signed afresh, as the same command.
        unsigned = {k: v for k, v in raw.items() if k != "auth"}
        return None, parse_command(unsigned)
    if key is not None and command.actor.id != key.actor_id:
        return f"actor.id: {command.actor.id} is not the signing key's actor {key.actor_id}", raw
    return None, command


@dataclass
class BatchSummary:
    """Counts by exit code and the batch's worst exit code."""

    counts: dict[int, int] = field(default_factory=dict)

    def add(self, code: int) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> int:
        return worst_exit_code(self.counts)

    def to_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "applied": self.counts.get(EXIT_APPLIED, 0),
            "concurrency_conflict": self.counts.get(EXIT_CONFLICT, 0),
            "rejected": self.counts.get(EXIT_REJECTED, 0),
            "timed_out": self.counts.get(EXIT_TIMEOUT, 0),
            "invalid": self.counts.get(EXIT_USAGE, 0),
            "exit_code": self.exit_code,
        }

    def __str__(self) -> str:
        d = self.to_dict()
        return (
            f"{d['total']} command(s): {d['applied']} applied, "
            f"{d['concurrency_conflict']} concurrency_conflict, {d['rejected']} rejected "
            f"otherwise, {d['timed_out']} timed out, {d['invalid']} invalid"
        )


Record = dict[str, Any]


def _record(item: BatchLine, code: int, event: dict[str, Any] | None = None) -> Record:
    record: Record = {"line": item.line, "exit_code": code}
    if item.command is not None:
        record["command_id"] = item.command.command_id
        record["request_id"] = item.command.request_id
    if item.error is not None:
        record["error"] = item.error
    if code == EXIT_TIMEOUT:
        record["outcome"] = "timed_out"
    if event is not None:
        record["outcome"] = event["event_type"]
        record["event"] = event
    return record


def run_batch(
    client: GovernanceClient,
    items: list[BatchLine],
    *,
    wait: bool,
    timeout: float,
    resend_attempts: int | None = None,
    on_record: Callable[[Record], None],
) -> BatchSummary:
    """Send every valid command; with ``wait`` await every outcome. Each line yields one
    record (``on_record``): invalid lines exit code 2, outcomes 0/3/4, no outcome 5, and
    sent-but-not-awaited 0."""
    summary = BatchSummary()
    valid = [item for item in items if item.command is not None]
    for item in items:
        if item.command is None:
            summary.add(EXIT_USAGE)
            on_record(_record(item, EXIT_USAGE))
    if not wait:
        for item in valid:
            assert item.payload is not None
            client.send(item.payload)
            summary.add(EXIT_APPLIED)
            on_record({**_record(item, EXIT_APPLIED), "outcome": "sent"})
        return summary
    by_id = {item.command.command_id: item for item in valid if item.command is not None}

    def outcome(command: Command, event: dict[str, Any]) -> None:
        code = exit_code_for(event)
        summary.add(code)
        on_record(_record(by_id[command.command_id], code, event))

    results = client.send_all_and_wait(
        [item.payload for item in valid if item.payload is not None],
        timeout,
        resend_attempts=resend_attempts,
        on_outcome=outcome,
        raise_on_timeout=False,
    )
    for item, event in zip(valid, results, strict=True):
        if event is None:
            summary.add(EXIT_TIMEOUT)
            on_record(_record(item, EXIT_TIMEOUT))
    return summary
