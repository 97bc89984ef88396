"""``governance status``: is the deployment healthy? Usable as a health check.

Exit codes: 0 healthy; 8 something needs attention (each reason on stderr, or in the JSON
document's ``problems``): no worker consuming the command queue, dead letters waiting, an
unpublished outcome event older than ``--max-outbox-age``, no approval policy applied, or an
active policy the registry cannot satisfy; 7 the broker or the database cannot be reached.
With ``--json`` stdout is always one JSON document, whatever the outcome.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from governance import urls
from governance_cli.errors import service_failure
from governance_cli.options import broker_url_option, database_url_option
from producer.health import EXIT_NEEDS_ATTENTION, Health, ServiceUnreachable, read_health
from producer.outcomes import EXIT_UNAVAILABLE


@click.command("status")
@broker_url_option
@database_url_option
@click.option(
    "--max-outbox-age",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="An unpublished outcome event older than this needs attention.",
)
@click.option(
    "--inspect-timeout",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the workers to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def status(
    broker_url: str, database_url: str, max_outbox_age: float, inspect_timeout: float, as_json: bool
) -> None:
    """Workers, queue depths, the outbox backlog, the periodic tasks' last runs and the
    approval policy (applied? satisfiable by the registry as it stands?).

    Exits 0 when healthy, 8 when something needs attention, 7 when the broker or the
    database cannot be reached."""
    try:
        health = read_health(
            broker_url,
            database_url,
            max_outbox_age=max_outbox_age,
            inspect_timeout=inspect_timeout,
        )
    except ServiceUnreachable as exc:
        # A driver error the CLI knows how to explain (a database never migrated, a login
        # refused) is said as every other command says it.
        cause = exc.__cause__
        explained = service_failure(cause, click.get_current_context()) if cause else None
        reason = urls.redact(explained.message if explained is not None else str(exc))
        if as_json:
            _print_json({"healthy": False, "unreachable": exc.service, "problems": [reason]})
        else:
            click.echo(f"governance: {reason}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        _print_json(health.to_dict())
    else:
        click.echo(_text(health))
        for problem in health.problems:
            click.echo(f"governance: needs attention: {problem}", err=True)
    sys.exit(0 if health.healthy else EXIT_NEEDS_ATTENTION)


def _print_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _text(health: Health) -> str:
    lines = [f"workers: {len(health.workers)}"]
    lines += [
        f"  {w.name}: {', '.join(w.queues) or '(no queues)'}"
        + (f" (auth {w.auth}, policy {w.policy})" if w.auth and w.policy else "")
        for w in health.workers
    ]
    lines.append("queues:")
    for queue in health.queues:
        shown = (
            f"{queue.messages} message(s), {queue.consumers} consumer(s)"
            if queue.exists
            else "not declared yet"
        )
        lines.append(f"  {queue.name}: {shown}")
    oldest = health.oldest_unpublished_age_seconds
    lines.append(
        f"outbox: {health.unpublished_events} unpublished"
        + (f", oldest {oldest:.1f}s old" if oldest is not None else "")
    )
    for run in health.last_runs:
        when = (
            f"{run.finished_at} ({run.age_seconds:.0f}s ago, handled {run.handled})"
            if run.finished_at is not None and run.age_seconds is not None
            else "never"
        )
        lines.append(f"last {run.task} run: {when}")
    lines.append(f"trust mode: {health.auth or 'not recorded (run governance migrate)'}")
    lines.append(_policy_text(health))
    lines.append("healthy" if health.healthy else "NEEDS ATTENTION")
    return "\n".join(lines)


def _policy_text(health: Health) -> str:
    policy = health.policy
    if policy is None or not policy.applied:
        return "approval policy: none applied"
    shown = f"approval policy: version {policy.version} ({policy.rules} rule(s)"
    shown += ", forced)" if policy.forced else ")"
    if policy.error is not None:
        return f"{shown}, cannot be read"
    if policy.shortfalls:
        return f"{shown}, UNSATISFIABLE ({len(policy.shortfalls)} shortfall(s))"
    return f"{shown}, satisfiable"


if __name__ == "__main__":
    status()
