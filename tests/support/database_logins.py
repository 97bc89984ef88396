"""Login roles of the tests' databases, as a deployment makes them: the workers connect as a
member of the database's worker role, never as its owner, so a grant the worker lacks fails a
test; a reader login reads as an auditor would.

Roles belong to the whole server, so every name here starts with the database's own (which
carries a random part): ``<database>_worker_login`` in ``<database>_worker``,
``<database>_reader_login`` in ``<database>_reader``. :func:`drop_database_roles` drops them
with the database (``tests.support.services.fresh_database`` does).
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from worker.database_roles import default_names

Group = Literal["worker", "reader"]

_lock = threading.Lock()
#: Login URLs made by this process, by (owner URL, group).
_logins: dict[tuple[str, Group], str] = {}


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


def login_name(database: str, group: Group) -> str:
    return f"{database}_{group}_login"


def worker_login_url(database_url: str) -> str:
    """``database_url`` as a login role that is a member of the database's worker role (the
    one ``governance migrate`` recorded, else ``<database>_worker``, created here as
    ``migrate`` would when the database is not migrated yet). A URL whose database cannot be
    reached is returned as it is: the test is about that."""
    return _login_url(database_url, "worker")


def reader_login_url(database_url: str) -> str:
    """``database_url`` as a login role that is a member of the database's reader role."""
    return _login_url(database_url, "reader")


def _login_url(database_url: str, group: Group) -> str:
    with _lock:
        known = _logins.get((database_url, group))
        if known is not None:
            return known
        try:
            with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as owner:
                url = _make_login(owner, database_url, group)
        except psycopg.OperationalError:
            return database_url
        _logins[(database_url, group)] = url
        return url


def _make_login(owner: psycopg.Connection[Any], database_url: str, group: Group) -> str:
    database = database_name(database_url)
    group_role = (
        _recorded_role(owner, group)
        or dict(zip(("worker", "reader"), default_names(database), strict=True))[group]
    )
    login, password = login_name(database, group), secrets.token_hex(16)
    for name, options in ((group_role, sql.SQL("NOLOGIN")), (login, sql.SQL("LOGIN"))):
        exists = owner.execute("SELECT FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists is None:
            owner.execute(sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), options))
    owner.execute(
        sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(login), sql.Literal(password)
        )
    )
    owner.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(group_role), sql.Identifier(login))
    )
    parts = urlsplit(database_url)
    # Only the user and password change: the hosts part may list several (host:port,...).
    hosts = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(login, safe='')}:{password}@{hosts}"))


def _recorded_role(owner: psycopg.Connection[Any], group: Group) -> str | None:
    """The group role ``governance migrate`` recorded for this database, if any."""
    column = owner.execute(
        "SELECT FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'deployment_settings'"
        " AND column_name = %s",
        (f"{group}_role",),
    ).fetchone()
    if column is None:
        return None
    row = owner.execute(
        sql.SQL("SELECT {} FROM deployment_settings").format(sql.Identifier(f"{group}_role"))
    ).fetchone()
    return None if row is None else row[0]


def drop_database_roles(admin: psycopg.Connection[Any], database: str) -> None:
    """Drop the roles named after ``database`` (its logins and its default group roles): run
    once the database is dropped, which takes every privilege they held with it."""
    with _lock:
        for key in [key for key in _logins if database_name(key[0]) == database]:
            del _logins[key]
    worker, reader = default_names(database)
    for name in (login_name(database, "worker"), login_name(database, "reader"), worker, reader):
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
