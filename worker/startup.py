"""Whether a database fits this worker: its schema is the one this release migrates to, and
it records the trust mode this worker runs in.

Both are checked once when the worker starts (a mismatch stops it with one line saying what
to do). The trust mode is checked again on every connection the worker's pool opens, so that
a worker which could not reach its database at start never applies a command under another
mode than the deployment's: it applies nothing until the two agree. The schema is not: a
worker already running when ``governance migrate`` brings the schema forward (a rolling
upgrade, whose migrations keep the previous release working) goes on until it is replaced.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory

from worker.migrate import MIGRATIONS
from worker.trust_mode import TrustModeUnknown, recorded_auth

_MIGRATE = "run `governance migrate`"


class DeploymentMismatch(psycopg.OperationalError):
    """The database does not fit this worker (another schema revision or trust mode).

    A :class:`psycopg.OperationalError`, so that the connection pool treats a connection
    that fails the check as one that could not be made: it is discarded and retried with
    backoff, and every command waits (and is retried) instead of being applied.
    """


@cache
def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def schema_head() -> str:
    """The schema revision this release migrates to."""
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> frozenset[str]:
    """Every schema revision this release knows of (its own and the ones before)."""
    return frozenset(script.revision for script in _script().walk_revisions())


def schema_problem(revision: str | None) -> str | None:
    """Why a database at schema ``revision`` (None: never migrated) does not fit this worker,
    or None."""
    head = schema_head()
    if revision == head:
        return None
    if revision is None:
        return f"the database has no schema: {_MIGRATE} before starting workers"
    if revision in known_revisions():
        return (
            f"the database's schema is at revision {revision}, this worker needs {head}: "
            f"{_MIGRATE} (with this release) before starting its workers"
        )
    return (
        f"the database's schema is at revision {revision}, which this worker (schema {head}) "
        f"does not know: it was migrated by a newer release; run that release's workers"
    )


def trust_problem(recorded: str | None, auth: str) -> str | None:
    """Why a worker with ``GOVERNANCE_AUTH=auth`` must not run on a deployment that records
    trust mode ``recorded`` (None: none recorded), or None."""
    if recorded is None:
        return (
            "the database records no trust mode (GOVERNANCE_AUTH): "
            f"{_MIGRATE} (with --auth signed|off) before starting workers"
        )
    if recorded == auth:
        return None
    return (
        f"GOVERNANCE_AUTH={auth} but the deployment's trust mode is {recorded} "
        f"(recorded by governance migrate): start the worker with GOVERNANCE_AUTH={recorded}, "
        f"or change the deployment's mode with `governance migrate --auth {auth}`"
    )


def privilege_problem(exc: psycopg.errors.InsufficientPrivilege) -> str:
    """The one line for a database login that may not read what a worker checks at start."""
    reason = str(exc).strip().splitlines()[0]
    return (
        f"the database login of GOVERNANCE_DATABASE_URL may not read the deployment's schema "
        f"({reason}): {_MIGRATE} with this release (it grants the worker role what it needs) "
        "and connect as a member of the worker role"
    )


def deployment_problem(conn: psycopg.Connection[Any], auth: str) -> str | None:
    """Why the database behind ``conn`` does not fit a worker with ``GOVERNANCE_AUTH=auth``
    that is about to start, or None. Raises :class:`psycopg.Error` when it cannot be read."""
    return schema_problem(_schema_revision(conn)) or _trust_problem_of(conn, auth)


def check_trust_mode(conn: psycopg.Connection[Any], auth: str) -> None:
    """Raise :class:`DeploymentMismatch` when the deployment behind ``conn`` records another
    trust mode than ``auth``, or none. Leaves an autocommit connection idle."""
    problem = _trust_problem_of(conn, auth)
    if problem is not None:
        raise DeploymentMismatch(problem)


def _trust_problem_of(conn: psycopg.Connection[Any], auth: str) -> str | None:
    try:
        recorded: str | None = recorded_auth(conn)
    except TrustModeUnknown:
        recorded = None
    return trust_problem(recorded, auth)


def _schema_revision(conn: psycopg.Connection[Any]) -> str | None:
    exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])
