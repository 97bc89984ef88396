"""``governance``: entry point and the subcommands that belong to no other group."""

from __future__ import annotations

import sys

import click

from governance_cli import actors, audit, client_commands, demo, dlq
from governance_cli.options import database_url_option

#: Exit codes of the contract.
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Governed mutation requests: submit transition commands, await their outcomes, follow
    the event stream, and run the pieces of the service.

    \b
    Exit codes with --wait and for `wait`:
      0 applied   3 concurrency_conflict   4 any other rejection
      5 timed out 2 invalid usage or a command that fails validation
    """


@cli.command()
@database_url_option
def migrate(database_url: str) -> None:
    """Apply the database schema (idempotent; safe to run from several processes at once)."""
    from worker.config import ConfigurationError, database_url_from
    from worker.migrate import migrate as apply_migrations

    try:
        url = database_url_from(database_url, "GOVERNANCE_DATABASE_URL")
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"schema at revision {apply_migrations(url)}")


client_commands.register(cli)
demo.register(cli)
dlq.register(cli)
actors.register(cli)
audit.register(cli)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
