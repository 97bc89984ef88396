"""``governance demo``: the whole pipeline and a short tour of its guarantees."""

from __future__ import annotations

import sys
import time

import click


def register(cli: click.Group) -> None:
    """Add ``demo`` to ``cli``."""
    cli.add_command(demo)


@click.command()
@click.option(
    "--database-url",
    envvar="GOVERNANCE_DATABASE_URL",
    default=None,
    help="Use this PostgreSQL instead of an embedded one [env GOVERNANCE_DATABASE_URL].",
)
@click.option(
    "--broker-url",
    envvar="GOVERNANCE_BROKER_URL",
    default=None,
    help="Use this RabbitMQ instead of the in-memory broker [env GOVERNANCE_BROKER_URL].",
)
@click.option("--json", "as_json", is_flag=True, help="Print events and the summary as JSON lines.")
def demo(database_url: str | None, broker_url: str | None, as_json: bool) -> None:
    """Run the pipeline and a tour: a race on one snapshot, a two-step approval, an expiry,
    and a stale version resolved by each strategy.

    With no URLs it needs nothing installed: an embedded PostgreSQL, an in-memory broker
    and an in-process Celery worker running the production task and SQL. Exits 0 when every
    guarantee held.
    """
    from governance_cli.tour import run_tour
    from worker.app import EXPIRE_DUE_TASK, MAINTENANCE_QUEUE, app
    from worker.embedded import running_stack

    started = time.monotonic()
    with running_stack(database_url=database_url, broker_url=broker_url) as stack:
        if not as_json:
            where = "embedded PostgreSQL" if stack.embedded_database else "your PostgreSQL"
            broker = "in-memory broker" if stack.in_memory_broker else "your RabbitMQ"
            click.echo(f"pipeline up in {time.monotonic() - started:.1f}s ({where}, {broker})")
        report = run_tour(
            stack.broker_url,
            stack.database_url,
            lambda: app.send_task(EXPIRE_DUE_TASK, queue=MAINTENANCE_QUEUE),
            as_json=as_json,
        )
    if not as_json:
        verdict = "every guarantee held" if not report.problems else "PROBLEMS found"
        click.echo(f"\n{verdict} ({time.monotonic() - started:.1f}s)")
    sys.exit(1 if report.problems else 0)
