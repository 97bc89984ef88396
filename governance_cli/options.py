"""Options every subcommand that talks to a service shares.

The URL options are checked as they are parsed, by the one parser of each URL
(:mod:`governance.urls`), so a bad value is refused with the variable or option that gave it
(exit 2) before anything is sent. Their defaults are constants, and every ``envvar`` is read
by click when the command runs, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from governance import urls
from governance.topology import DEFAULT_AUDIENCE, DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL
from governance_cli.errors import Refused, Service, remember_setting, setting_name

F = TypeVar("F", bound=Callable[..., Any])


def _checked(service: Service, parse: Callable[[str, str], str]) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = parse(value, setting_name(ctx, param, service))
        except urls.UrlError as exc:
            raise Refused(str(exc)) from None
        remember_setting(ctx, param, service, url)
        return url

    return callback


database_url_option: Callable[[F], F] = click.option(
    "--database-url",
    envvar="GOVERNANCE_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    callback=_checked("database", urls.database_url),
    metavar="URL",
    # Its default is shown by hand, so --help never prints a password, even a placeholder.
    help="PostgreSQL URL: postgresql://, postgres:// or postgresql+psycopg://; several "
    "hosts as libpq allows [env GOVERNANCE_DATABASE_URL] "
    f"[default: {urls.redact(DEFAULT_DATABASE_URL)}].",
)

broker_url_option: Callable[[F], F] = click.option(
    "--broker-url",
    envvar="GOVERNANCE_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    callback=_checked("broker", urls.broker_url),
    metavar="URL",
    help="RabbitMQ URL, amqp:// or amqps://; several separated by ';' for failover "
    f"[env GOVERNANCE_BROKER_URL] [default: {urls.redact(DEFAULT_BROKER_URL)}].",
)

signing_key_option: Callable[[F], F] = click.option(
    "--signing-key",
    envvar="GOVERNANCE_SIGNING_KEY",
    metavar="FILE",
    help="Key file to sign commands with (see `governance keygen`) [env GOVERNANCE_SIGNING_KEY].",
)


def _audience(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # The worker's own check, so that the client never signs for an audience no worker has.
    from worker.config import ConfigurationError, audience_from

    source = ctx.get_parameter_source(param.name) if param.name else None
    name = "--audience" if source is ParameterSource.COMMANDLINE else "GOVERNANCE_AUDIENCE"
    try:
        return audience_from(value, name)
    except ConfigurationError as exc:
        raise Refused(str(exc)) from None


audience_option: Callable[[F], F] = click.option(
    "--audience",
    envvar="GOVERNANCE_AUDIENCE",
    default=DEFAULT_AUDIENCE,
    show_default=True,
    callback=_audience,
    help="The deployment signed commands are meant for [env GOVERNANCE_AUDIENCE].",
)

dry_run_option: Callable[[F], F] = click.option(
    "--dry-run",
    is_flag=True,
    help="Print the command exactly as it would be sent now (signed with --signing-key) as "
    "JSON, and send nothing.",
)
