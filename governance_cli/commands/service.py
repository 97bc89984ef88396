"""Subcommands that run a piece of the service: ``migrate``."""

from __future__ import annotations

import click

from governance_cli.options import database_url_option


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
def migrate(database_url: str, auth: str | None) -> None:
    """Apply the database schema (idempotent; safe to run from several processes at once)
    and record the deployment's trust mode."""
    from worker.migrate import migrate_deployment

    migrated = migrate_deployment(database_url, auth=auth)
    click.echo(f"schema at revision {migrated.revision}")
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


COMMANDS = (migrate,)
