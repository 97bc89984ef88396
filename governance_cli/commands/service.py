"""Subcommands that run a piece of the service: ``migrate``, ``console``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from governance_cli.errors import Refused
from governance_cli.options import audience_option, broker_url_option, database_url_option

if TYPE_CHECKING:
    from worker.database_roles import DatabaseRoles


@click.command()
@database_url_option
@click.option(
    "--auth",
    type=click.Choice(["signed", "off"]),
    default=None,
    help="Record the deployment's trust mode: signed (the default of a new database), or "
    "off (development only). Workers whose GOVERNANCE_AUTH differs refuse to start. "
    "Without it the recorded mode is kept.",
)
@click.option(
    "--worker-role",
    metavar="NAME",
    default=None,
    help="The group role the workers' login roles are members of (default: the name "
    "recorded by an earlier run, else <database>_worker).",
)
@click.option(
    "--reader-role",
    metavar="NAME",
    default=None,
    help="The group role of read-only logins (default: the name recorded by an earlier run, "
    "else <database>_reader).",
)
def migrate(
    database_url: str, auth: str | None, worker_role: str | None, reader_role: str | None
) -> None:
    """Apply the database schema (idempotent; safe to run from several processes at once),
    record the deployment's trust mode, and create and grant this database's worker and
    reader group roles."""
    from worker.database_roles import DatabaseRoleError
    from worker.migrate import migrate_deployment

    try:
        migrated = migrate_deployment(
            database_url, auth=auth, worker_role=worker_role, reader_role=reader_role
        )
    except DatabaseRoleError as exc:
        raise Refused(str(exc)) from None
    click.echo(f"schema at revision {migrated.revision}")
    for line in roles_report(migrated.roles):
        click.echo(line)
    if migrated.previous_auth is not None:
        click.echo(
            f"trust mode changed from {migrated.previous_auth} to {migrated.auth}: workers "
            f"must now run GOVERNANCE_AUTH={migrated.auth}; running ones keep their mode "
            "until restarted (governance status names them)"
        )
    else:
        click.echo(
            f"trust mode {migrated.auth} (workers run GOVERNANCE_AUTH={migrated.auth}; "
            "change it with --auth)"
        )


def roles_report(roles: DatabaseRoles) -> list[str]:
    """What ``migrate`` says of the database's roles."""

    def state(name: str) -> str:
        return "created" if name in roles.created else "exists"

    lines = [
        f"worker role {roles.worker} ({state(roles.worker)}): granted what the workers do "
        f"here; make the workers' login a member (GRANT {roles.worker} TO <login>)",
        f"reader role {roles.reader} ({state(roles.reader)}): granted SELECT on every table",
    ]
    if roles.revoked:
        lines.append(
            f"revoked every privilege of {', '.join(roles.revoked)} in this database (the "
            "roles are kept: other databases of this server may still use them)"
        )
    for table in roles.undeclared:
        lines.append(
            f"warning: table {table} declares no worker privileges: the worker role has none"
        )
    return lines


@click.command()
@database_url_option
@broker_url_option
@audience_option
@click.option(
    "--bind",
    default="127.0.0.1:8080",
    envvar="GOVERNANCE_CONSOLE_BIND",
    show_default=True,
    help="HOST:PORT the console listens on [env GOVERNANCE_CONSOLE_BIND].",
)
@click.option(
    "--origin",
    default="http://localhost:8080",
    envvar="GOVERNANCE_CONSOLE_ORIGIN",
    show_default=True,
    help="The console's public origin, as browsers reach it; its host is the passkeys' "
    "relying-party id [env GOVERNANCE_CONSOLE_ORIGIN]. Behind TLS, its https:// origin.",
)
def console(database_url: str, broker_url: str, audience: str, bind: str, origin: str) -> None:
    """Serve the approver console: approvers enroll a passkey by a one-time link
    (`governance actors enroll`), sign in with it, and approve or reject in the browser,
    each decision signed by their passkey. The console holds no key: it reads, relays what
    browsers signed, and streams outcomes. Workers must accept its origin
    (GOVERNANCE_WEBAUTHN_ORIGINS)."""
    import uvicorn

    from governance.passkeys import origins_from
    from governance_console.app import ConsoleSettings, create_app

    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("HOST:PORT", param_hint="--bind")
    try:
        (checked,) = origins_from(origin)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--origin") from None
    accepted = os.environ.get("GOVERNANCE_WEBAUTHN_ORIGINS")
    try:
        origins = origins_from(accepted) if accepted else None
    except ValueError as exc:
        raise click.ClickException(f"GOVERNANCE_WEBAUTHN_ORIGINS: {exc}") from None
    settings = ConsoleSettings(
        database_url, broker_url, origin=checked, audience=audience, webauthn_origins=origins
    )
    click.echo(f"console on http://{bind}, for browsers at {checked}", err=True)
    uvicorn.run(create_app(settings), host=host.strip("[]"), port=int(port), log_level="warning")


COMMANDS = (migrate, console)
