"""``governance migrate``: bring the schema to the newest Alembic revision, record the
deployment's trust mode, and grant the database's worker and reader roles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from worker import database_roles
from worker.config import sqlalchemy_url
from worker.database_roles import DatabaseRoles
from worker.trust_mode import AUTH_MODES

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant both sides agree on; it only has to be unique within this database.
_MIGRATION_LOCK = 0x6F76_6572_6E31
_DEFAULT_MODE = "INSERT INTO deployment_settings (auth) VALUES ('signed') ON CONFLICT DO NOTHING"


@dataclass(frozen=True, slots=True)
class Migrated:
    """What ``governance migrate`` left: the schema's revision, the recorded trust mode
    (``previous_auth``: the mode it replaced, when this run changed it) and the database's
    roles."""

    revision: str
    auth: str
    roles: DatabaseRoles
    previous_auth: str | None = None


def migrate(
    database_url: str,
    *,
    auth: str | None = None,
    worker_role: str | None = None,
    reader_role: str | None = None,
) -> str:
    """Apply every pending migration and return the schema's revision (see
    :func:`migrate_deployment`)."""
    return migrate_deployment(
        database_url, auth=auth, worker_role=worker_role, reader_role=reader_role
    ).revision


def migrate_deployment(
    database_url: str,
    *,
    auth: str | None = None,
    worker_role: str | None = None,
    reader_role: str | None = None,
) -> Migrated:
    """Apply every pending migration; record ``auth`` as the deployment's trust mode when
    given (None keeps the recorded one: ``signed`` on a new database); create the database's
    worker and reader group roles when missing and grant them exactly their privileges
    (:func:`worker.database_roles.grant`: ``worker_role``/``reader_role`` name them, None
    keeps the recorded names, ``<database>_worker``/``<database>_reader`` on a new database).

    Idempotent, and safe when several processes run it at once: they queue on an advisory
    lock held for the migration's transaction, and the later ones find nothing to do.
    """
    if auth is not None and auth not in AUTH_MODES:
        raise ValueError(f"unknown trust mode {auth!r}: expected one of {', '.join(AUTH_MODES)}")
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            config.attributes["worker_role"] = worker_role
            config.attributes["reader_role"] = reader_role
            command.upgrade(config, "head")
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            # A row deleted by hand is the default again: signed.
            connection.execute(text(_DEFAULT_MODE))
            # On every run, not only the one that reached the roles' revision: the tables of
            # later revisions are granted, and grants are exactly the declared ones again.
            roles = database_roles.grant(connection, worker=worker_role, reader=reader_role)
            roles = roles.after(config.attributes.get("database_roles"))
            recorded = str(
                connection.execute(text("SELECT auth FROM deployment_settings")).scalar_one()
            )
            if auth is None or auth == recorded:
                return Migrated(str(version), recorded, roles)
            connection.execute(
                text("UPDATE deployment_settings SET auth = :auth, updated_at = now()"),
                {"auth": auth},
            )
            return Migrated(str(version), auth, roles, previous_auth=recorded)
    finally:
        engine.dispose()
