"""Databases at a schema revision of an earlier release, as an older deployment left them."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from worker.config import sqlalchemy_url
from worker.migrate import MIGRATIONS


def upgrade_to(database_url: str, revision: str) -> str:
    """Migrate ``database_url`` up to ``revision`` only (not to the newest); returns the
    revision the schema is then at."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()
