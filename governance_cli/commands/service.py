"""Subcommands that run a piece of the service: ``migrate``."""

from __future__ import annotations

import click

from governance_cli.options import database_url_option


@click.command()
@database_url_option
def migrate(database_url: str) -> None:
    """Apply the database schema (idempotent; safe to run from several processes at once)."""
    from worker.migrate import migrate as apply_migrations

    click.echo(f"schema at revision {apply_migrations(database_url)}")


COMMANDS = (migrate,)
