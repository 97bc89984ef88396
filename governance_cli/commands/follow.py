"""The subcommands that follow the event stream: ``watch`` and ``wait``."""

from __future__ import annotations

import sys
from typing import Any

import click

from governance.commands import CommandType
from governance.model import Status
from governance.rules import RejectionCode
from governance.topology import (
    DEFAULT_SUBSCRIPTION_MAX_AGE_SECONDS,
    DEFAULT_SUBSCRIPTION_MAX_LENGTH,
)
from governance_cli.client_format import duration_option, echo_json, short_time
from governance_cli.errors import Refused
from governance_cli.options import broker_url_option, database_url_option
from producer.event_log import EventsPruned, connect_reader
from producer.event_proof import EventVerifier
from producer.gate import wait_for_status
from producer.outcomes import describe
from producer.subscriptions import EventFilter, Subscription, delete_subscription, replay


def _say_where_the_log_ends(database_url: str, since_sequence: int) -> None:
    """Tell at once that nothing of the log is to be replayed when ``since_sequence`` lies
    beyond its end, rather than wait without a word."""
    with connect_reader(database_url) as conn:
        row = conn.execute("SELECT coalesce(max(sequence), 0) FROM outbox_events").fetchone()
    last = int(row[0]) if row is not None else 0
    if since_sequence > last:
        click.echo(
            f"the log ends at sequence {last}; waiting for events after {since_sequence}",
            err=True,
        )


@click.command()
@click.option("--request-id", "request_ids", multiple=True, help="Only this request (repeatable).")
@click.option("--state-id", "state_ids", multiple=True, help="Only this state (repeatable).")
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    type=click.Choice(["applied", "rejected"]),
    help="Only applied or only rejected outcomes.",
)
@click.option(
    "--type",
    "command_types",
    multiple=True,
    type=click.Choice([t.value for t in CommandType]),
    help="Only this command type (repeatable).",
)
@click.option(
    "--code",
    "codes",
    multiple=True,
    type=click.Choice([c.value for c in RejectionCode]),
    help="Only rejections with this code (repeatable).",
)
@click.option(
    "--name",
    help="A durable subscription: events are kept while you are away and resumed by the "
    "next `watch --name` with the same name.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    default=DEFAULT_SUBSCRIPTION_MAX_LENGTH,
    show_default=True,
    help="With --name, when the subscription is created: the events it keeps at most while "
    "you are away (the oldest are dropped).",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=1),
    default=DEFAULT_SUBSCRIPTION_MAX_AGE_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="With --name, when the subscription is created: events older than this are dropped "
    "unread.",
)
@click.option(
    "--delete",
    is_flag=True,
    help="With --name: remove that durable subscription, and the events it holds, for good.",
)
@click.option(
    "--since-sequence",
    type=click.IntRange(min=0),
    help="First replay the event log after this sequence (needs the database), then follow live.",
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--json", "as_json", is_flag=True, help="Print each event as a JSON line.")
@broker_url_option
@database_url_option
def watch(
    request_ids: tuple[str, ...],
    state_ids: tuple[str, ...],
    outcomes: tuple[str, ...],
    command_types: tuple[str, ...],
    codes: tuple[str, ...],
    name: str | None,
    max_length: int,
    max_age: float,
    delete: bool,
    since_sequence: int | None,
    count: int | None,
    as_json: bool,
    broker_url: str,
    database_url: str,
) -> None:
    """Follow outcome events as they happen (Ctrl-C to stop).

    One line per event (sequence, time, what happened), or JSON lines with --json.
    Events are deduplicated by event_id.

    \b
    Examples:
      governance watch --request-id req-42
      governance watch --outcome rejected --code concurrency_conflict
      governance watch --name audit --json      # durable: resumes where it stopped
      governance watch --since-sequence 1041    # the log after 1041, then live
      governance watch --name audit --delete    # remove the durable subscription
    """
    event_filter = EventFilter.of(
        request_ids=request_ids,
        state_ids=state_ids,
        outcomes=outcomes,
        command_types=command_types,
        rejection_codes=codes,
    )
    if name is not None and since_sequence is not None:
        raise click.UsageError("--name and --since-sequence cannot be combined")
    if delete:
        _delete(broker_url, name)
        return
    if since_sequence is not None:
        _say_where_the_log_ends(database_url, since_sequence)
    # Only events signed by a registered worker are shown (counted and logged otherwise).
    verifier = EventVerifier.from_environment(database_url)
    stream: Subscription | Any = (
        replay(database_url, broker_url, since_sequence, event_filter, verifier=verifier)
        if since_sequence is not None
        else Subscription(
            broker_url,
            event_filter,
            name=name,
            max_length=max_length,
            max_age_seconds=max_age,
            verifier=verifier,
        )
    )
    try:
        _follow(stream, count, as_json)
    except EventsPruned as exc:
        raise Refused(str(exc)) from None


def _delete(broker_url: str, name: str | None) -> None:
    if name is None:
        raise click.UsageError("--delete needs --name: the durable subscription to remove")
    if not delete_subscription(broker_url, name):
        raise click.ClickException(f"no subscription {name}")
    click.echo(f"subscription {name} deleted", err=True)


def _follow(stream: Any, count: int | None, as_json: bool) -> None:
    seen = 0
    with stream:
        # Said once the queue is bound: every event from now on will be shown.
        click.echo("following events (Ctrl-C to stop)", err=True)
        for event in stream:
            if as_json:
                echo_json(event)
            else:
                click.echo(
                    f"{event.get('sequence', ''):>8}  {short_time(event.get('occurred_at'))}"
                    f"  {describe(event)}"
                )
            sys.stdout.flush()
            seen += 1
            if count is not None and seen >= count:
                break


@click.command()
@click.argument("request_id")
@click.option(
    "--until",
    "until",
    required=True,
    metavar="STATUS[,STATUS...]",
    help="Statuses to wait for, e.g. approved,rejected.",
)
@duration_option("1h", "Give up after this long (exit 5).")
@click.option("--json", "as_json", is_flag=True, help="Print the event that got it there.")
@broker_url_option
@database_url_option
def wait(
    request_id: str,
    until: str,
    timeout: float,
    as_json: bool,
    broker_url: str,
    database_url: str,
) -> None:
    """Wait until REQUEST_ID reaches a status: a pipeline gate.

    Returns at once if the request is already there and its history verifies (as
    `governance verify REQUEST_ID` does), else follows its events.

    \b
    Exit codes:
      0 the request is in one of the statuses
      4 it ended in another final status, so it never will be
      5 timed out
      6 it was already there, but its history does not verify (what is wrong on stderr)
    \b
    Example:
      governance wait req-42 --until approved,rejected --timeout 1h
    """
    statuses = {s.strip() for s in until.split(",") if s.strip()}
    unknown = statuses - {s.value for s in Status}
    if not statuses or unknown:
        given = f"{', '.join(sorted(unknown))} is not a status: " if unknown else ""
        raise click.BadParameter(
            f"{given}expected statuses from {', '.join(s.value for s in Status)}",
            param_hint="--until",
        )

    def waiting(status: str | None) -> None:
        click.echo(
            f"waiting for {request_id} to become {'/'.join(sorted(statuses))} "
            f"(now {status or 'not submitted'})",
            err=True,
        )

    result = wait_for_status(
        database_url,
        broker_url,
        request_id,
        statuses,
        timeout,
        on_waiting=waiting,
        verifier=EventVerifier.from_environment(database_url),
    )
    if as_json and result.event is not None:
        echo_json(result.event)
    else:
        click.echo(result.message, err=result.exit_code != 0)
    sys.exit(result.exit_code)


COMMANDS = (watch, wait)
