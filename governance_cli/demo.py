"""``governance demo``: the whole pipeline and a short tour of its guarantees."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import click

from governance import urls
from producer.outcomes import EXIT_USAGE

if TYPE_CHECKING:
    from worker.embedded import Stack


def register(cli: click.Group) -> None:
    """Add ``demo`` to ``cli``."""
    cli.add_command(demo)


@click.command()
@click.option(
    "--database-url",
    default=None,
    help="Run on this PostgreSQL instead of an embedded one (migrated, the demo's approval "
    "policy applied, demo-* rows left in it).",
)
@click.option(
    "--broker-url",
    default=None,
    help="Run on this RabbitMQ instead of the in-memory broker (consuming its command queue).",
)
@click.option("--json", "as_json", is_flag=True, help="Print events and the summary as JSON lines.")
def demo(database_url: str | None, broker_url: str | None, as_json: bool) -> None:
    """Run the pipeline and a tour: a race on one snapshot, a two-step approval, an expiry,
    and a stale version resolved by each strategy.

    It runs on an embedded PostgreSQL, an in-memory broker and an in-process Celery worker
    running the production task and SQL, started for this run and gone after it; only the
    URLs given here on its command line take their place (GOVERNANCE_DATABASE_URL and
    GOVERNANCE_BROKER_URL are not read, so a shell set up for a deployment never runs the
    demo on it by accident). Exits 0 when every guarantee held.
    """
    from governance_cli.tour import run_tour
    from worker.embedded import EmbeddedUnavailable, running_stack

    database_url, broker_url = _checked(database_url, broker_url)
    started = time.monotonic()
    try:
        with running_stack(database_url=database_url, broker_url=broker_url) as stack:
            # Imported once the stack has set the worker's environment, which it reads.
            from worker.app import EXPIRE_DUE_TASK, MAINTENANCE_QUEUE, app

            up = time.monotonic() - started
            if as_json:
                pipeline = {"runs_on": where(stack), "up_seconds": round(up, 1)}
                click.echo(json.dumps({"pipeline": pipeline}, sort_keys=True))
            else:
                click.echo(f"pipeline up in {up:.1f}s ({where(stack)})")
            report = run_tour(
                stack.broker_url,
                stack.database_url,
                lambda: app.send_task(EXPIRE_DUE_TASK, queue=MAINTENANCE_QUEUE),
                as_json=as_json,
            )
    except EmbeddedUnavailable as exc:
        click.echo(f"Error: {exc}, or give the demo --database-url", err=True)
        sys.exit(EXIT_USAGE)
    if not as_json:
        verdict = "every guarantee held" if not report.problems else "PROBLEMS found"
        click.echo(f"\n{verdict} ({time.monotonic() - started:.1f}s)")
    sys.exit(1 if report.problems else 0)


def where(stack: Stack) -> str:
    """What the pipeline runs on, in words, with any password hidden."""
    database = (
        "an embedded PostgreSQL started for this run"
        if stack.embedded_database
        else f"PostgreSQL at {urls.redact(stack.database_url)}"
    )
    broker = (
        "an in-memory broker"
        if stack.in_memory_broker
        else f"RabbitMQ at {urls.redact(stack.broker_url)}"
    )
    return f"{database}, {broker}, an in-process worker"


def _checked(database_url: str | None, broker_url: str | None) -> tuple[str | None, str | None]:
    try:
        return (
            None if database_url is None else urls.database_url(database_url, "--database-url"),
            None if broker_url is None else urls.broker_url(broker_url, "--broker-url"),
        )
    except urls.UrlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
