"""Options every subcommand that talks to a service shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from governance.topology import DEFAULT_AUDIENCE, DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL

F = TypeVar("F", bound=Callable[..., Any])

database_url_option: Callable[[F], F] = click.option(
    "--database-url",
    envvar="GOVERNANCE_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="PostgreSQL URL [env GOVERNANCE_DATABASE_URL].",
)

broker_url_option: Callable[[F], F] = click.option(
    "--broker-url",
    envvar="GOVERNANCE_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="RabbitMQ URL [env GOVERNANCE_BROKER_URL].",
)

signing_key_option: Callable[[F], F] = click.option(
    "--signing-key",
    envvar="GOVERNANCE_SIGNING_KEY",
    metavar="FILE",
    help="Key file to sign commands with (see `governance keygen`) [env GOVERNANCE_SIGNING_KEY].",
)

audience_option: Callable[[F], F] = click.option(
    "--audience",
    envvar="GOVERNANCE_AUDIENCE",
    default=DEFAULT_AUDIENCE,
    show_default=True,
    help="The deployment signed commands are meant for [env GOVERNANCE_AUDIENCE].",
)
