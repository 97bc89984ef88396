"""``governance migrate``: bring the schema to the newest Alembic revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from worker.config import sqlalchemy_url

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant both sides agree on; it only has to be unique within this database.
_MIGRATION_LOCK = 0x6F76_6572_6E31


def migrate(database_url: str) -> str:
    """Apply every pending migration and return the schema's revision.

    Idempotent, and safe when several processes run it at once: they queue on an advisory
    lock held for the migration's transaction, and the later ones find nothing to do.
    """
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    return str(version)
