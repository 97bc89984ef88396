"""Shared parsing and output helpers of the producer subcommands."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import click

from governance.commands import (
    LATEST_TIMESTAMP,
    InvalidCommand,
    check_timestamp,
    parse_timestamp,
)
from producer.keys import KeyFileError, SigningKey, load_key_file
from producer.outcomes import EXIT_USAGE

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h``, ``1h30m``, ``2d``."""
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise click.BadParameter(f"expected a duration like 30s, 5m, 1h or 1h30m, got {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def duration_option(default: str, help_text: str) -> Any:
    """``--timeout DURATION``, in seconds: a positive, finite duration."""

    def convert(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
        seconds = parse_duration(value)
        # Zero or less would give up before the first send, and infinity never would.
        if not (math.isfinite(seconds) and seconds > 0):
            raise click.BadParameter(f"expected a positive duration like 30s or 5m, got {value!r}")
        return seconds

    return click.option(
        "--timeout",
        default=default,
        show_default=True,
        callback=convert,
        metavar="DURATION",
        help=help_text,
    )


def parse_json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint=option) from exc
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object", param_hint=option)
    return value


def parse_when(text: str | None, option: str) -> datetime | None:
    """An ISO-8601 timestamp (a bare date or time without zone is taken as UTC).

    An instant no command may name (see :func:`governance.commands.check_timestamp`) is
    reported as an invalid command: exit 2 with a one-line message.
    """
    if text is None:
        return None
    try:
        return parse_timestamp(text, option)
    except InvalidCommand as refused:
        zoned = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed = datetime.fromisoformat(zoned)
        except ValueError as exc:
            raise click.BadParameter(
                f"expected an ISO-8601 timestamp, got {text!r}", param_hint=option
            ) from exc
        if parsed.tzinfo is not None:
            # It has a zone, so it was refused for the instant itself: taking it as UTC
            # instead would quietly name another instant.
            invalid_command(refused)
        try:
            return check_timestamp(parsed.replace(tzinfo=UTC), option)
        except InvalidCommand as exc:
            invalid_command(exc)


def deadline_in(text: str, option: str) -> datetime:
    """Now plus the duration ``text`` (see :func:`parse_duration`), as a timestamp a command
    may carry; one too far away (or not a finite duration) exits 2 with a one-line message."""
    seconds = parse_duration(text)
    try:
        when = datetime.now(UTC) + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        # timedelta refuses NaN, infinity and anything past its own range of days.
        invalid_command(
            InvalidCommand(
                option,
                f"expected a finite duration ending by {LATEST_TIMESTAMP.date().isoformat()} "
                f"UTC, got {text!r}",
            )
        )
    try:
        return check_timestamp(when, option)
    except InvalidCommand as exc:
        invalid_command(exc)


def invalid_command(exc: InvalidCommand) -> NoReturn:
    """Report a command that fails validation and exit 2 (the contract's usage error)."""
    click.echo(f"Error: invalid command: {exc}", err=True)
    sys.exit(EXIT_USAGE)


def usage_error(message: str) -> NoReturn:
    """Report invalid usage in one line and exit 2."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, sort_keys=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def short_time(value: str | None) -> str:
    return "" if value is None else value.replace("T", " ").split(".")[0].rstrip("Z")


def actor_text(actor: Mapping[str, Any] | None) -> str:
    if not actor:
        return ""
    return str(actor.get("id"))


def load_signing_key(path: str | None) -> SigningKey | None:
    """The key file at ``path`` (None without one); a bad file is a usage error (exit 2)."""
    if not path:
        return None
    try:
        return load_key_file(path)
    except KeyFileError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
