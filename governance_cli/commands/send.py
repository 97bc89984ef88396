"""``governance send``: the commands of a JSON-lines file, sent and optionally awaited."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

from governance_cli.client_format import duration_option, echo_json, load_signing_key, usage_error
from governance_cli.options import (
    audience_option,
    broker_url_option,
    dry_run_option,
    signing_key_option,
)
from producer.batch import load_commands, run_batch
from producer.client import GovernanceClient
from producer.outcomes import EXIT_USAGE


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8") as handle:
            yield handle


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--wait", is_flag=True, help="Await every outcome; exit with the worst code.")
@click.option(
    "--results",
    metavar="FILE",
    help="Where to write one JSON line per command (default: stdout).",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Send the valid commands even if some lines are invalid (they exit 2 anyway).",
)
@duration_option("5m", "With --wait: how long to await all the outcomes.")
@click.option(
    "--resend-attempts",
    type=click.IntRange(0, 100),
    default=2,
    show_default=True,
    help="With --wait: re-send commands still without an outcome this many times "
    "(safe: each is applied at most once).",
)
@click.option(
    "--keep-signatures",
    is_flag=True,
    help="Send lines already signed with another key as they are, instead of refusing them.",
)
@dry_run_option
@signing_key_option
@audience_option
@broker_url_option
def send(
    file: IO[str],
    wait: bool,
    results: str | None,
    skip_invalid: bool,
    timeout: float,
    resend_attempts: int,
    keep_signatures: bool,
    dry_run: bool,
    signing_key: str | None,
    audience: str,
    broker_url: str,
) -> None:
    """Send the commands of FILE, a JSON-lines file (`-` for stdin), one command object
    per line as in the wire contract.

    Every line is validated first: unless --skip-invalid, one invalid line means nothing
    is sent (exit 2). With --wait, each outcome is written as a JSON line
    {"line", "command_id", "request_id", "exit_code", "outcome", "event"} as it arrives,
    a progress bar and a summary go to stderr, and the exit code is the worst one
    (0 < 3 < 4 < 5 < 2). With --dry-run, each valid line is printed as it would be sent
    (signed with --signing-key), one JSON line each, and nothing is sent.
    """
    key = load_signing_key(signing_key)
    name = "stdin" if file.name in ("-", "<stdin>") else file.name
    try:
        items = load_commands(file, key, keep_signatures=keep_signatures, audience=audience)
    except UnicodeDecodeError as exc:
        usage_error(
            f"{name} is not UTF-8 text (it holds byte 0x{exc.object[exc.start]:02x}): "
            "save it as UTF-8, one JSON command object per line"
        )
    if not items:
        usage_error(f"{name} holds no commands: give one JSON command object per line")
    invalid = [item for item in items if item.error is not None]
    if invalid and not skip_invalid:
        for item in invalid:
            click.echo(f"line {item.line}: {item.error}", err=True)
        click.echo(f"Error: {len(invalid)} invalid line(s); nothing sent", err=True)
        sys.exit(EXIT_USAGE)
    if dry_run:
        with GovernanceClient(broker_url, signing_key=key, audience=audience) as client:
            for item in items:
                if item.payload is not None:
                    echo_json(client.wire_form(item.payload))
                else:
                    click.echo(f"line {item.line}: {item.error}", err=True)
        sys.exit(EXIT_USAGE if invalid else 0)
    with (
        _output(results) as out,
        GovernanceClient(broker_url, signing_key=key, audience=audience) as client,
    ):
        with click.progressbar(
            length=len(items), label="outcomes" if wait else "sent", file=sys.stderr
        ) as bar:

            def record(value: dict[str, Any]) -> None:
                out.write(json.dumps(value, ensure_ascii=False, sort_keys=True) + "\n")
                bar.update(1)

            summary = run_batch(
                client,
                items,
                wait=wait,
                timeout=timeout,
                resend_attempts=resend_attempts,
                on_record=record,
            )
        out.flush()
    click.echo(str(summary), err=True)
    sys.exit(summary.exit_code)


COMMANDS = (send,)
