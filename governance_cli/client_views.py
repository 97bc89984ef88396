"""Producer subcommands that read or follow: ``show``, ``pending``, ``history``, ``watch``,
``wait`` and ``send``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

from governance.codec import request_to_dict, timestamp_to_wire
from governance.commands import CommandType
from governance.model import PendingReason, Status
from governance.rules import RejectionCode
from governance_cli.client_format import (
    actor_text,
    duration_option,
    echo_json,
    load_signing_key,
    parse_when,
    service_errors,
    short_time,
    table,
)
from governance_cli.options import (
    audience_option,
    broker_url_option,
    database_url_option,
    signing_key_option,
)
from producer.batch import load_commands, run_batch
from producer.client import GovernanceClient
from producer.gate import wait_for_status
from producer.outcomes import EXIT_USAGE, describe
from producer.queries import Queries
from producer.subscriptions import EventFilter, Subscription, replay


def _show_request(view: dict[str, Any]) -> None:
    intent = view["intent"]
    click.echo(
        table(
            ["field", "value"],
            [
                ["request", view["request_id"]],
                ["status", view["status"]],
                ["revision", view["revision"]],
                ["pending reason", view["pending_reason"]],
                ["state", f"{view['state_id']} ({view['state_type']})"],
                ["mutation", view["mutation_type"]],
                ["operation", f"{intent['operation_name']} (risk {intent['risk_level']})"],
                ["submitted by", actor_text(view["context"]["actor"])],
                ["expected version", view["expected_state_version"]],
                ["expires at", short_time(view["expires_at"])],
                ["updated at", short_time(view["updated_at"])],
            ],
        )
    )
    if view["approval_requirements"]:
        click.echo("\nApproval requirements:")
        click.echo(
            table(
                ["step", "approval_id", "approver", "status", "grants", "decided by"],
                [
                    [
                        r["step_order"],
                        r["approval_id"],
                        approver_of(r),
                        r["status"],
                        f"{len(r.get('grants') or ())}/{r.get('min_approvals') or 1}",
                        r["decided_by"],
                    ]
                    for r in view["approval_requirements"]
                ],
            )
        )
    click.echo("\nDecision history:")
    click.echo(
        table(
            ["rev", "when", "decision", "actor", "reason"],
            [
                [
                    d["revision"],
                    short_time(d["occurred_at"]),
                    f"{d['category']}.{d['type']}",
                    actor_text(d["actor"]),
                    d["reason"],
                ]
                for d in view["decisions"]
            ],
        )
    )


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8") as handle:
            yield handle


def register(cli: click.Group) -> None:
    """Add the reading and following subcommands to ``cli``."""

    @cli.command()
    @click.argument("request_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the request as JSON.")
    @database_url_option
    @service_errors
    def show(request_id: str, as_json: bool, database_url: str) -> None:
        """Show REQUEST_ID: its status, revision, approvals and full decision history.

        Exits 4 when the request does not exist.
        """
        view = Queries(database_url).request(request_id)
        if view is None:
            click.echo(f"Error: no request {request_id}", err=True)
            sys.exit(4)
        if as_json:
            echo_json(view.to_dict())
        else:
            _show_request(view.to_dict())

    @cli.command()
    @click.option("--state-id", help="Only requests on this state.")
    @click.option(
        "--reason", type=click.Choice([r.value for r in PendingReason]), help="Only this reason."
    )
    @click.option("--approver", help="Only requests with a requirement pending for this approver.")
    @click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON array of requests.")
    @database_url_option
    @service_errors
    def pending(
        state_id: str | None,
        reason: str | None,
        approver: str | None,
        limit: int,
        as_json: bool,
        database_url: str,
    ) -> None:
        """List pending requests, oldest first (the approval queue)."""
        requests = Queries(database_url).pending(
            state_id=state_id, pending_reason=reason, approver_id=approver, limit=limit
        )
        if as_json:
            echo_json([request_to_dict(r) for r in requests])
            return
        click.echo(
            table(
                ["request", "state", "reason", "rev", "waiting on", "since"],
                [
                    [
                        r.request_id,
                        r.state_id,
                        r.pending_reason,
                        r.revision,
                        ",".join(
                            q.approver_id or f"group {q.approver_group}"
                            for q in r.approval_requirements
                            if q.status.value == "pending"
                        ),
                        short_time(timestamp_to_wire(r.updated_at)),
                    ]
                    for r in requests
                ],
            )
        )

    @cli.command()
    @click.option("--actor", required=True, help="The actor id whose decisions to list.")
    @click.option("--since", metavar="TIMESTAMP", help="From this time (ISO-8601, inclusive).")
    @click.option("--until", metavar="TIMESTAMP", help="Up to this time (exclusive).")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=1_000, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
    @database_url_option
    @service_errors
    def history(
        actor: str,
        since: str | None,
        until: str | None,
        limit: int,
        as_json: bool,
        database_url: str,
    ) -> None:
        """List the decisions an actor took, oldest first (an audit trail)."""
        entries = Queries(database_url).decisions_by_actor(
            actor,
            since=parse_when(since, "--since"),
            until=parse_when(until, "--until"),
            limit=limit,
        )
        if as_json:
            for entry in entries:
                echo_json(entry.to_dict())
            return
        rows = [
            [
                short_time(e.to_dict()["occurred_at"]),
                e.request_id,
                e.revision,
                f"{e.decision.category.value}.{e.decision.type}",
                e.decision.reason,
            ]
            for e in entries
        ]
        click.echo(table(["when", "request", "rev", "decision", "reason"], rows))

    @cli.command()
    @click.option(
        "--request-id", "request_ids", multiple=True, help="Only this request (repeatable)."
    )
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
        "--since-sequence",
        type=click.IntRange(min=0),
        help="First replay the event log after this sequence (needs the database), then "
        "follow live.",
    )
    @click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
    @click.option("--json", "as_json", is_flag=True, help="Print each event as a JSON line.")
    @broker_url_option
    @database_url_option
    @service_errors
    def watch(
        request_ids: tuple[str, ...],
        state_ids: tuple[str, ...],
        outcomes: tuple[str, ...],
        command_types: tuple[str, ...],
        codes: tuple[str, ...],
        name: str | None,
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
        stream: Subscription | Any = (
            replay(database_url, broker_url, since_sequence, event_filter)
            if since_sequence is not None
            else Subscription(broker_url, event_filter, name=name)
        )
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

    @cli.command()
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
    @service_errors
    def wait(
        request_id: str,
        until: str,
        timeout: float,
        as_json: bool,
        broker_url: str,
        database_url: str,
    ) -> None:
        """Wait until REQUEST_ID reaches a status: a pipeline gate.

        Returns at once if the request is already there, else follows its events.

        \b
        Exit codes:
          0 the request is in one of the statuses
          4 it ended in another final status, so it never will be
          5 timed out
        \b
        Example:
          governance wait req-42 --until approved,rejected --timeout 1h
        """
        statuses = {s.strip() for s in until.split(",") if s.strip()}
        unknown = statuses - {s.value for s in Status}
        if not statuses or unknown:
            raise click.BadParameter(
                f"expected statuses from {', '.join(s.value for s in Status)}", param_hint="--until"
            )

        def waiting(status: str | None) -> None:
            click.echo(
                f"waiting for {request_id} to become {'/'.join(sorted(statuses))} "
                f"(now {status or 'not submitted'})",
                err=True,
            )

        result = wait_for_status(
            database_url, broker_url, request_id, statuses, timeout, on_waiting=waiting
        )
        if as_json and result.event is not None:
            echo_json(result.event)
        else:
            click.echo(result.message, err=result.exit_code != 0)
        sys.exit(result.exit_code)

    @cli.command()
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
    @signing_key_option
    @audience_option
    @broker_url_option
    @service_errors
    def send(
        file: IO[str],
        wait: bool,
        results: str | None,
        skip_invalid: bool,
        timeout: float,
        resend_attempts: int,
        keep_signatures: bool,
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
        (0 < 3 < 4 < 5 < 2).
        """
        key = load_signing_key(signing_key)
        items = load_commands(file, key, keep_signatures=keep_signatures)
        invalid = [item for item in items if item.error is not None]
        if invalid and not skip_invalid:
            for item in invalid:
                click.echo(f"line {item.line}: {item.error}", err=True)
            click.echo(f"Error: {len(invalid)} invalid line(s); nothing sent", err=True)
            sys.exit(EXIT_USAGE)
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


def approver_of(requirement: dict[str, Any]) -> str:
    """Who may decide a requirement: its named approver, or its group."""
    if requirement.get("approver_id"):
        return str(requirement["approver_id"])
    return f"group {requirement.get('approver_group')}"
