"""The service URLs every entry point accepts: one parser each for the database and the broker.

A database URL is PostgreSQL's own (``postgresql://`` or ``postgres://``) or SQLAlchemy's
spelling of it with the psycopg 3 driver (``postgresql+psycopg://``); it is normalised to
``postgresql://``, which libpq reads, and :func:`sqlalchemy_url` spells it back for SQLAlchemy.
Several hosts (``postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write``) and a
socket directory (``postgresql:///db?host=/run/postgresql``) are libpq's and stay accepted.

A broker URL is ``amqp://`` or ``amqps://``, or several of them separated by ``;`` for
failover (``amqp://h1;amqp://h2``), as kombu reads them.

Every refusal names the setting at fault and never shows a password (see :func:`redact`).
"""

from __future__ import annotations

import re

DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
#: ``pyamqp`` is kombu's name for the same transport; ``memory`` is kombu's in-process broker,
#: which only the embedded demo stack and tests use.
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "memory")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r"^\d{1,5}$")


class UrlError(ValueError):
    """A URL no entry point can use; the message names the setting and what to do."""


def redact(url: str) -> str:
    """``url`` with the password of each of its hosts (or broker URLs) replaced by ``***``."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    rest = url[scheme.end() :]
    authority, separator, tail = _split_authority(rest)
    userinfo, at, hosts = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme.group(0)}{user}:***@{hosts}{separator}{tail}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """``user:password@hosts`` and what follows it (path, query)."""
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], char, rest[index + 1 :]
    return rest, "", ""


def database_url(url: str, setting: str) -> str:
    """The PostgreSQL URL ``url`` spelled ``postgresql://`` for libpq; ``setting`` (for
    instance ``GOVERNANCE_DATABASE_URL``) names where it came from in the error."""
    scheme = _SCHEME.match(url.strip())
    if scheme is None or scheme.group(1).lower() not in DATABASE_SCHEMES:
        raise UrlError(
            f"{setting}={redact(url)!r} is not a PostgreSQL URL: give "
            "postgresql://user:password@host:5432/database"
        )
    rest = url.strip()[scheme.end() :]
    authority, _, _ = _split_authority(rest)
    hosts = authority.rpartition("@")[2]
    for host in hosts.split(",") if hosts else ():
        _check_host(host, url, setting, "PostgreSQL")
    return "postgresql://" + rest


def sqlalchemy_url(database_url: str) -> str:
    """The same database, spelled for SQLAlchemy with the psycopg 3 driver."""
    scheme = _SCHEME.match(database_url)
    rest = database_url[scheme.end() :] if scheme is not None else database_url
    return "postgresql+psycopg://" + rest


def broker_url(url: str, setting: str) -> str:
    """The AMQP URL (or ``;``-separated failover list) ``url``, checked; ``setting`` names
    where it came from in the error."""
    parts = [part.strip() for part in url.split(";")]
    if not any(parts):
        raise UrlError(f"{setting} is empty: give amqp://user:password@host:5672//")
    for part in parts:
        scheme = _SCHEME.match(part)
        if scheme is None or scheme.group(1).lower() not in BROKER_SCHEMES:
            shown = redact(part) if len(parts) > 1 else redact(url)
            raise UrlError(
                f"{setting}={shown!r} is not an AMQP URL: give amqp://user:password@host:5672// "
                "(or several, separated by ';', for failover)"
            )
        authority, _, _ = _split_authority(part[scheme.end() :])
        hosts = authority.rpartition("@")[2]
        if "," in hosts:
            raise UrlError(
                f"{setting}={redact(url)!r} lists brokers with ',': separate them with ';', "
                "each a whole URL (amqp://h1//;amqp://h2//)"
            )
        if hosts:
            _check_host(hosts, url, setting, "AMQP")
    return ";".join(parts)


def _check_host(host: str, url: str, setting: str, kind: str) -> None:
    if host.startswith("["):  # an IPv6 literal, [::1]:5432
        name, _, port = host[1:].partition("]")
        port = port.removeprefix(":")
    else:
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    if port and (not _PORT.match(port) or int(port) > 65535):
        raise UrlError(f"{setting}={redact(url)!r} has a port that is not a number 1-65535")
    if not name and port:
        raise UrlError(f"{setting}={redact(url)!r} names a port but no host of the {kind} server")
