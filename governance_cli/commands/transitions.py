"""The transition subcommands, one per command type (``submit``, ``approve``, ...).

Each builds a validated command with :class:`producer.GovernanceClient` and sends it; with
``--wait`` it awaits the outcome and exits with the contract's code; with ``--dry-run`` it
prints the command exactly as it would be sent and sends nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from governance.codec import command_to_dict
from governance.commands import Command, InvalidCommand, ResolutionStrategy
from governance.model import ActorType, PendingReason
from governance_cli.client_format import (
    deadline_in,
    duration_option,
    echo_json,
    invalid_command,
    load_signing_key,
    parse_json_object,
    parse_when,
    usage_error,
)
from governance_cli.options import (
    audience_option,
    broker_url_option,
    dry_run_option,
    signing_key_option,
)
from producer.client import GovernanceClient
from producer.keys import SigningKey
from producer.outcomes import EXIT_TIMEOUT, OutcomeTimeout, describe, exit_code_for

F = Callable[..., Any]
#: Builds one command with the client from the options every transition shares.
Builder = Callable[[GovernanceClient, dict[str, Any]], Command]

_WAIT_HELP = (
    "Await the outcome and exit with its code: 0 applied, 3 concurrency_conflict, "
    "4 other rejection, 5 timed out."
)


def transition_options(f: F) -> F:
    """Options every transition subcommand shares (applied bottom-up)."""
    decorators = [
        click.argument("request_id", metavar="REQUEST_ID"),
        click.option(
            "--actor",
            envvar="GOVERNANCE_ACTOR",
            help="Who issues the command (an id; default: the signing key's actor) "
            "[env GOVERNANCE_ACTOR].",
        ),
        click.option("--actor-name", help="The actor's display name."),
        click.option(
            "--actor-type",
            type=click.Choice([t.value for t in ActorType]),
            default="user",
            show_default=True,
        ),
        click.option("--reason", help="Why (kept in the decision history)."),
        click.option("--metadata-json", metavar="JSON", help="Command metadata, a JSON object."),
        click.option(
            "--command-id",
            help="Idempotency key (default: a fresh UUID). Re-running with the same id and "
            "arguments is safe: the command is applied at most once.",
        ),
        click.option("--wait", is_flag=True, help=_WAIT_HELP),
        duration_option("30s", "With --wait: how long to await the outcome (30s, 5m, 1h)."),
        click.option(
            "--resend-attempts",
            type=click.IntRange(0, 100),
            default=2,
            show_default=True,
            help="With --wait: re-send the same command this many times before timing out.",
        ),
        click.option(
            "--json", "as_json", is_flag=True, help="Print JSON (the outcome event with --wait)."
        ),
        dry_run_option,
        signing_key_option,
        audience_option,
        broker_url_option,
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def revision_option(f: F) -> F:
    """``--expected-revision``: the optimistic-concurrency guard of every later transition."""
    return click.option(
        "--expected-revision",
        type=click.IntRange(min=0),
        required=True,
        help="The revision you read (see `governance show`); a stale one is rejected with "
        "concurrency_conflict (exit 3).",
    )(f)


def _actor(options: dict[str, Any], key: SigningKey | None) -> dict[str, Any]:
    actor_id = options["actor"] or (key.actor_id if key is not None else None)
    if not actor_id:
        usage_error("--actor is required (or --signing-key, whose actor signs)")
    if key is not None and actor_id != key.actor_id:
        usage_error(f"--actor {actor_id} does not match the signing key, which is {key.actor_id}'s")
    actor: dict[str, Any] = {"id": actor_id, "type": options["actor_type"]}
    if options.get("actor_name"):
        actor["name"] = options["actor_name"]
    return actor


def execute(options: dict[str, Any], build: Builder) -> None:
    """Build one command, then print it (--dry-run), send it, or send and await it (--wait),
    exiting with the contract's code."""
    key = load_signing_key(options["signing_key"])
    common = {
        "actor": _actor(options, key),
        "reason": options["reason"],
        "metadata": parse_json_object(options["metadata_json"], "--metadata-json"),
        "command_id": options["command_id"],
    }
    # The client connects to the broker only when it first sends or listens.
    with GovernanceClient(
        options["broker_url"], signing_key=key, audience=options["audience"]
    ) as client:
        try:
            command = build(client, common)
        except InvalidCommand as exc:
            invalid_command(exc)
        if options["dry_run"]:
            echo_json(client.wire_form(command))
            return
        if not options["wait"]:
            client.send(command)
            if options["as_json"]:
                echo_json({"command_id": command.command_id, "command": command_to_dict(command)})
            else:
                click.echo(command.command_id)
            return
        try:
            event = client.send_and_wait(
                command, options["timeout"], resend_attempts=options["resend_attempts"]
            )
        except OutcomeTimeout as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_TIMEOUT)
    if options["as_json"]:
        echo_json(event)
    else:
        click.echo(describe(event))
    sys.exit(exit_code_for(event))


def _parse_requirement(text: str) -> dict[str, Any]:
    """``APPROVER[:STEP[:APPROVAL_ID]]`` -> a requirement dict."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise click.BadParameter(
            f"expected APPROVER[:STEP[:APPROVAL_ID]], got {text!r}", param_hint="--requirement"
        )
    requirement: dict[str, Any] = {"approver_id": parts[0]}
    if len(parts) > 1 and parts[1]:
        try:
            requirement["step_order"] = int(parts[1])
        except ValueError as exc:
            raise click.BadParameter(
                f"step must be a number, got {parts[1]!r}", param_hint="--requirement"
            ) from exc
    if len(parts) > 2 and parts[2]:
        requirement["approval_id"] = parts[2]
    return requirement


def _intent(options: dict[str, Any]) -> dict[str, Any]:
    intent = parse_json_object(options["intent_json"], "--intent-json") or {}
    for option, key in (
        ("operation", "operation_name"),
        ("risk_level", "risk_level"),
        ("category", "category"),
        ("description", "description"),
    ):
        if options[option] is not None:
            intent[key] = options[option]
    if "operation_name" not in intent:
        usage_error("give --operation or --intent-json with operation_name")
    return intent


@click.command()
@transition_options
@click.option("--state-id", required=True, help="The state the mutation changes.")
@click.option("--state-type", required=True, help="What kind of state (e.g. config).")
@click.option("--mutation-type", required=True, help="What kind of change (e.g. update).")
@click.option("--operation", help="The intent's operation name (or give --intent-json).")
@click.option(
    "--intent-json",
    metavar="JSON",
    help='The whole intent: {"operation_name": ..., "risk_level": ..., ...}. '
    "--operation/--risk-level/--category/--description override its fields.",
)
@click.option("--risk-level", type=click.Choice(["low", "medium", "high", "critical"]))
@click.option("--category", help="The intent's category.")
@click.option("--description", help="The intent's description.")
@click.option(
    "--requirement",
    "requirements",
    multiple=True,
    metavar="APPROVER[:STEP[:ID]]",
    help="An approval requirement (repeatable), e.g. --requirement alice:1 "
    "--requirement bob:2. Implies pending for approval.",
)
@click.option(
    "--initial-status",
    type=click.Choice(["created", "pending", "approved"]),
    help="Default: pending when requirements or a pending reason are given, else created.",
)
@click.option("--pending-reason", type=click.Choice([r.value for r in PendingReason]))
@click.option("--expected-state-version", help="The state version the change was made on.")
@click.option("--expires-at", metavar="TIMESTAMP", help="Pending deadline, ISO-8601.")
@click.option("--expires-in", metavar="DURATION", help="Pending deadline from now (1h).")
@click.option("--request-metadata-json", metavar="JSON", help="Request metadata (JSON).")
def submit(**options: Any) -> None:
    """Submit a new mutation request REQUEST_ID.

    \b
    Example:
      governance submit req-42 --actor ci --state-id cfg-7 --state-type config \\
        --mutation-type update --operation raise-limit --risk-level high \\
        --requirement alice:1 --requirement bob:2 --wait
    """
    intent = _intent(options)
    expires_at = parse_when(options["expires_at"], "--expires-at")
    if options["expires_in"] is not None:
        expires_at = deadline_in(options["expires_in"], "--expires-in")
    requirements = [_parse_requirement(r) for r in options["requirements"]]
    request_metadata = parse_json_object(
        options["request_metadata_json"], "--request-metadata-json"
    )

    def build(client: GovernanceClient, common: dict[str, Any]) -> Command:
        return client.submit(
            options["request_id"],
            state_id=options["state_id"],
            state_type=options["state_type"],
            mutation_type=options["mutation_type"],
            intent=intent,
            initial_status=options["initial_status"],
            pending_reason=options["pending_reason"],
            approval_requirements=requirements,
            expected_state_version=options["expected_state_version"],
            expires_at=expires_at,
            request_metadata=request_metadata,
            **common,
        )

    execute(options, build)


@click.command("move-to-pending")
@revision_option
@transition_options
@click.option(
    "--pending-reason",
    type=click.Choice([r.value for r in PendingReason]),
    required=True,
    help="Why the request waits.",
)
@click.option("--expires-at", metavar="TIMESTAMP", help="Pending deadline, ISO-8601.")
def move_to_pending(**options: Any) -> None:
    """Put REQUEST_ID (created or approved) back to pending."""
    expires_at = parse_when(options["expires_at"], "--expires-at")
    execute(
        options,
        lambda client, common: client.move_to_pending(
            options["request_id"],
            expected_revision=options["expected_revision"],
            pending_reason=options["pending_reason"],
            expires_at=expires_at,
            **common,
        ),
    )


def _decide(options: dict[str, Any], method: str, **extra: Any) -> None:
    """Send the transition ``method`` of the client on REQUEST_ID at its expected revision."""
    execute(
        options,
        lambda client, common: getattr(client, method)(
            options["request_id"], expected_revision=options["expected_revision"], **extra, **common
        ),
    )


@click.command()
@revision_option
@transition_options
def approve(**options: Any) -> None:
    """Approve REQUEST_ID (created or pending -> approved).

    \b
    Example:
      governance approve req-42 --expected-revision 3 --actor alice --wait
    """
    _decide(options, "approve")


@click.command()
@revision_option
@transition_options
def reject(**options: Any) -> None:
    """Reject REQUEST_ID (pending or approved -> rejected)."""
    _decide(options, "reject")


@click.command()
@revision_option
@transition_options
def cancel(**options: Any) -> None:
    """Cancel REQUEST_ID (any status that is not final)."""
    _decide(options, "cancel")


@click.command()
@revision_option
@transition_options
def expire(**options: Any) -> None:
    """Expire REQUEST_ID now (pending -> expired)."""
    _decide(options, "expire")


@click.command("mark-executed")
@revision_option
@transition_options
def mark_executed(**options: Any) -> None:
    """Record that REQUEST_ID was carried out (approved -> executed)."""
    _decide(options, "mark_executed")


_approval_id_option = click.option(
    "--approval-id", required=True, help="Which requirement (see `governance show REQUEST_ID`)."
)


@click.command("approve-requirement")
@revision_option
@transition_options
@_approval_id_option
def approve_requirement(**options: Any) -> None:
    """Grant one approval requirement of REQUEST_ID (only its approver, lowest open step
    first). The last grant approves the request."""
    _decide(options, "approve_requirement", approval_id=options["approval_id"])


@click.command("reject-requirement")
@revision_option
@transition_options
@_approval_id_option
def reject_requirement(**options: Any) -> None:
    """Refuse one approval requirement of REQUEST_ID; the request becomes rejected."""
    _decide(options, "reject_requirement", approval_id=options["approval_id"])


@click.command()
@revision_option
@transition_options
@click.option("--superseding-request-id", required=True, help="The request that replaces this one.")
def supersede(**options: Any) -> None:
    """Mark REQUEST_ID superseded by another request."""
    _decide(options, "supersede", superseding_request_id=options["superseding_request_id"])


@click.command("resolve-version")
@revision_option
@transition_options
@click.option("--current-state-version", required=True, help="The state's version as it is now.")
@click.option(
    "--strategy",
    type=click.Choice([s.value for s in ResolutionStrategy]),
    required=True,
    help="What to do when the request was made on an older version.",
)
def resolve_version(**options: Any) -> None:
    """Check REQUEST_ID against the state's current version.

    \b
    Example:
      governance resolve-version req-42 --expected-revision 4 --actor ci \\
        --current-state-version v2 --strategy reject_stale --wait
    """
    _decide(
        options,
        "resolve_version",
        current_state_version=options["current_state_version"],
        strategy=options["strategy"],
    )


#: In the order ``governance --help`` has always listed them by (click sorts them anyway).
COMMANDS = (
    submit,
    move_to_pending,
    approve,
    reject,
    cancel,
    expire,
    mark_executed,
    approve_requirement,
    reject_requirement,
    supersede,
    resolve_version,
)
