"""``governance``: the root group, with every subcommand group added to it."""

from __future__ import annotations

import os
import sys

import click

from governance_cli import actors, audit, demo, dlq, policy
from governance_cli.commands import follow, send, service, transitions, views
from governance_cli.group import GovernanceGroup
from governance_cli.schema import schema
from governance_cli.status import status

#: The installed distribution whose version ``governance --version`` prints.
DISTRIBUTION = "governance-worker"


@click.group(
    cls=GovernanceGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name=DISTRIBUTION, prog_name="governance")
def cli() -> None:
    """Governed mutation requests: submit transition commands, await their outcomes, follow
    the event stream, and run the pieces of the service.

    \b
    Exit codes (every error is one line on stderr):
      0  applied, or done
      1  any other error (a registry conflict, an unknown dead letter, a file not written)
      2  invalid usage, an unusable setting, or a command that fails validation
      3  concurrency_conflict (with --wait)
      4  any other rejection (with --wait), or no such request
      5  timed out
      6  audit verification failed (`governance verify`)
      7  a service cannot be reached or used: PostgreSQL or RabbitMQ down, a login
         refused, a database never migrated
      8  an approval policy the registry cannot satisfy (`policy apply|check`, a registry
         change refused); `governance status`: the deployment needs attention
    130  interrupted (Ctrl-C)
    141  standard output closed by its reader (`watch | head -1`)

    \b
    Shell completion (bash; zsh and fish likewise):
      eval "$(_GOVERNANCE_COMPLETE=bash_source governance)"
    """


for group in (service, transitions, views, follow, send, actors, policy, audit):
    for command in group.COMMANDS:
        cli.add_command(command)
cli.add_command(schema)
cli.add_command(status)
demo.register(cli)
dlq.register(cli)


def main() -> None:
    """The ``governance`` console script."""
    _trace_commands()
    try:
        cli(prog_name="governance")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


def _trace_commands() -> None:
    """Export a span per command sent when ``OTEL_TRACES_EXPORTER`` asks for it (the SDK is
    not even imported otherwise)."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none")
    if exporter == "none":
        return
    from worker.observability import tracing

    try:
        tracing.configure(
            exporter, os.environ.get("GOVERNANCE_TRACES_FILE"), service_name="governance-cli"
        )
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
