"""The subcommands that read the database: ``show``, ``pending`` and ``history``."""

from __future__ import annotations

import sys
from typing import Any

import click

from governance.codec import request_to_dict, timestamp_to_wire
from governance.model import PendingReason
from governance_cli.client_format import actor_text, echo_json, parse_when, short_time, table
from governance_cli.errors import Refused
from governance_cli.options import database_url_option
from producer.queries import Queries

#: As the outcome of a command rejected for it: the request asked for does not exist.
EXIT_NO_REQUEST = 4


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


@click.command()
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON.")
@database_url_option
def show(request_id: str, as_json: bool, database_url: str) -> None:
    """Show REQUEST_ID: its status, revision, approvals and full decision history.

    Exits 4 when the request does not exist.
    """
    view = Queries(database_url).request(request_id)
    if view is None:
        click.echo(f"Error: no request {request_id}", err=True)
        sys.exit(EXIT_NO_REQUEST)
    if as_json:
        echo_json(view.to_dict())
    else:
        _show_request(view.to_dict())


@click.command()
@click.option("--state-id", help="Only requests on this state.")
@click.option(
    "--reason", type=click.Choice([r.value for r in PendingReason]), help="Only this reason."
)
@click.option("--approver", help="Only requests with a requirement pending for this approver.")
@click.option(
    "--for",
    "for_actor",
    metavar="ACTOR",
    help="Only what ACTOR may decide now: a pending requirement of the request's open step "
    "names it or one of its groups, it is an active approver with an unrevoked key, it did "
    "not submit the request and has decided none of it.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of requests.")
@database_url_option
def pending(
    state_id: str | None,
    reason: str | None,
    approver: str | None,
    for_actor: str | None,
    limit: int,
    as_json: bool,
    database_url: str,
) -> None:
    """List pending requests, oldest first (the approval queue).

    With --for ACTOR, what that actor may decide now (its inbox), with the approvals of
    each request it may decide (it decides at most one of them).
    """
    if for_actor is not None:
        if reason is not None or approver is not None:
            raise Refused(
                "--for lists what one actor may decide now; it takes no --reason or --approver"
            )
        _pending_for(for_actor, state_id, limit, as_json, database_url)
        return
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


def _pending_for(
    actor_id: str, state_id: str | None, limit: int, as_json: bool, database_url: str
) -> None:
    found = Queries(database_url).pending_for(actor_id, state_id=state_id, limit=limit)
    if as_json:
        echo_json([item.to_dict() for item in found])
        return
    click.echo(
        table(
            ["request", "state", "mutation", "rev", "submitted by", "may decide", "since"],
            [
                [
                    item.request.request_id,
                    item.request.state_id,
                    item.request.mutation_type,
                    item.request.revision,
                    item.request.context.actor.id,
                    ",".join(item.approval_ids),
                    short_time(timestamp_to_wire(item.request.updated_at)),
                ]
                for item in found
            ],
        )
    )


@click.command()
@click.option("--actor", required=True, help="The actor id whose decisions to list.")
@click.option("--since", metavar="TIMESTAMP", help="From this time (ISO-8601, inclusive).")
@click.option("--until", metavar="TIMESTAMP", help="Up to this time (exclusive).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@database_url_option
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


def approver_of(requirement: dict[str, Any]) -> str:
    """Who may decide a requirement: its named approver, or its group."""
    if requirement.get("approver_id"):
        return str(requirement["approver_id"])
    return f"group {requirement.get('approver_group')}"


COMMANDS = (show, pending, history)
