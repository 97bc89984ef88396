"""Every error of ``governance`` is one line on stderr with a documented exit code.

Exit codes beyond the outcomes of the contract (see :mod:`producer.outcomes`):

- 2: invalid usage, a setting that cannot be used, or a command that fails validation;
- 7 (:data:`EXIT_UNAVAILABLE`): a service (PostgreSQL, RabbitMQ) cannot be reached or used
  as configured: down, a refused login, a database never migrated;
- 8 (:data:`EXIT_UNSATISFIABLE`): an approval policy the registry cannot satisfy, or a
  registry change that would leave the active one so (``governance status`` exits 8 too,
  when the deployment needs attention).

The database and broker URL options record, in the click context, which setting each URL
came from (:func:`remember_setting`), so that :func:`service_failure` can name the variable
or option to fix; passwords are never shown (:func:`governance.urls.redact`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

import amqp.exceptions
import click
import kombu.exceptions
import psycopg
import psycopg.errors
from click.core import ParameterSource

from governance.urls import redact
from producer.outcomes import EXIT_UNAVAILABLE, EXIT_USAGE

Service = Literal["database", "broker"]

#: An approval policy that cannot be satisfied (``policy apply|check``, registry changes).
EXIT_UNSATISFIABLE = 8

_OPTION = {"database": "--database-url", "broker": "--broker-url"}
_VARIABLE = {"database": "GOVERNANCE_DATABASE_URL", "broker": "GOVERNANCE_BROKER_URL"}
_SERVER = {"database": "PostgreSQL", "broker": "RabbitMQ"}
_META_KEY = "governance_cli.settings"


class Refused(click.ClickException):
    """Invalid usage or an unusable setting: one line, exit 2."""

    exit_code = EXIT_USAGE


class ServiceUnavailable(click.ClickException):
    """A service that cannot be reached or used as configured: one line, exit 7."""

    exit_code = EXIT_UNAVAILABLE


class Unsatisfiable(click.ClickException):
    """An approval policy the registry cannot satisfy: one line naming the rule, the
    submitter and the shortfall, exit 8."""

    exit_code = EXIT_UNSATISFIABLE


class OneLine(click.ClickException):
    """Any click error (a usage error prints the usage first), reduced to one line with the
    exit code it had."""

    def __init__(self, error: click.ClickException) -> None:
        message = " ".join(error.format_message().split())
        if isinstance(error, click.UsageError) and error.ctx is not None:
            message += f" (see '{error.ctx.command_path} --help')"
        super().__init__(message)
        # click declares exit_code on the class; this error keeps the one it reduces.
        setattr(self, "exit_code", error.exit_code)  # noqa: B010


@dataclass(frozen=True)
class Setting:
    """Where a service's URL came from, to be named in an error about it."""

    service: Service
    url: str
    source: ParameterSource | None

    @property
    def name(self) -> str:
        """The variable or option that set the URL."""
        if self.source is ParameterSource.ENVIRONMENT:
            return _VARIABLE[self.service]
        if self.source is ParameterSource.COMMANDLINE:
            return _OPTION[self.service]
        return f"{_OPTION[self.service]}'s default"

    @property
    def fix(self) -> str:
        """Where to give another URL."""
        return f"{_OPTION[self.service]} or {_VARIABLE[self.service]}"

    def scrub(self, text: str) -> str:
        """``text`` without the URL's password, should a driver have quoted it."""
        for part in self.url.split(";"):
            password = _password_of(part)
            if password:
                text = text.replace(password, "***")
        return text


def _password_of(url: str) -> str:
    authority = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    userinfo, at, _ = authority.rpartition("@")
    return userinfo.partition(":")[2] if at else ""


def setting_name(ctx: click.Context, param: click.Parameter, service: Service) -> str:
    """The variable or option the value of ``param`` came from, as an error names it."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    return Setting(service, "", source).name


def remember_setting(
    ctx: click.Context, param: click.Parameter, service: Service, url: str
) -> None:
    """Record where ``service``'s URL came from, for :func:`service_failure`."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    # meta is one dict shared by every context of the invocation, the root group's included.
    ctx.meta.setdefault(_META_KEY, {})[service] = Setting(service, url, source)


def _setting(ctx: click.Context, service: Service) -> Setting:
    settings: dict[str, Setting] = ctx.meta.get(_META_KEY, {})
    return settings.get(service) or Setting(service, "", None)


#: Errors of the broker's client that mean it cannot be reached (a TimeoutError is not one:
#: it is an outcome that did not arrive in time, exit 5).
_BROKER_UNREACHABLE = (
    kombu.exceptions.OperationalError,
    amqp.exceptions.RecoverableConnectionError,
    ConnectionError,
    socket.gaierror,
)
_NOT_MIGRATED = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedFunction,
)


def service_failure(exc: BaseException, ctx: click.Context) -> ServiceUnavailable | None:
    """The one-line error for ``exc`` when it, or the driver error it wraps, says a service
    cannot be reached or used; else None."""
    for candidate in _causes(exc):
        failure = _explain(candidate, ctx)
        if failure is not None:
            return failure
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy keeps the driver's error as ``orig``."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 5:
        found.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return found


def _refused_resource(exc: BaseException) -> bool:
    """Whether a refusal is of a queue or exchange the user has no permission for ("access to
    queue 'x' ... refused for user 'y'"), not of the login."""
    return "access to " in str(getattr(exc, "reply_text", "") or exc)


def _explain(exc: BaseException, ctx: click.Context) -> ServiceUnavailable | None:
    if isinstance(exc, _NOT_MIGRATED):
        where = _setting(ctx, "database")
        return ServiceUnavailable(
            f"the database {_at(where)}({where.name}) has no governance schema, or an older "
            "one: run `governance migrate` first"
        )
    if isinstance(exc, psycopg.OperationalError):
        where = _setting(ctx, "database")
        return _unreachable(where, _first_line(str(exc)))
    if isinstance(exc, amqp.exceptions.AccessRefused) and _refused_resource(exc):
        where = _setting(ctx, "broker")
        reply = " ".join(str(getattr(exc, "reply_text", "") or exc).split())
        return ServiceUnavailable(
            f"the broker {_at(where)}({where.name}) refused this user ({reply}): each broker "
            "user may only do its part; what only the workers declare (their queues, "
            "governance.events) exists once a worker has started, so start one first"
        )
    if isinstance(exc, amqp.exceptions.AccessRefused):
        where = _setting(ctx, "broker")
        return ServiceUnavailable(
            f"the broker {_at(where)}({where.name}) refused the login (ACCESS_REFUSED): check "
            f"the user and password, then give the URL with {where.fix}"
        )
    if isinstance(exc, amqp.exceptions.NotAllowed):
        where = _setting(ctx, "broker")
        return ServiceUnavailable(
            f"the broker {_at(where)}({where.name}) refused its virtual host (NOT_ALLOWED): "
            f"check the path of the URL and the user's permissions; give it with {where.fix}"
        )
    if isinstance(exc, amqp.exceptions.PreconditionFailed):
        where = _setting(ctx, "broker")
        reply = " ".join(str(getattr(exc, "reply_text", "") or exc).split())
        return ServiceUnavailable(
            f"the broker {_at(where)}({where.name}) has a queue declared otherwise than this "
            f"client declares it ({reply}): run the worker and this command with the same "
            "queue settings (GOVERNANCE_QUEUE_TYPE, GOVERNANCE_DELIVERY_LIMIT)"
        )
    if isinstance(exc, _BROKER_UNREACHABLE):
        where = _setting(ctx, "broker")
        return _unreachable(where, _first_line(str(exc)) or type(exc).__name__)
    return None


def _at(where: Setting) -> str:
    return f"at {redact(where.url)} " if where.url else ""


def _unreachable(where: Setting, reason: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"cannot reach the {where.service} {_at(where)}({where.name}): {where.scrub(reason)}; "
        f"start {_SERVER[where.service]} there or give another URL with {where.fix}"
    )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else ""
