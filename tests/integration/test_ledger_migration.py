"""Migrating a ledger to one per signer: the entries recorded before take their signer's
namespace (a signed deployment's: the actor of their outcome; the worker's own expiries:
``system``) and are kept the default window from when they were recorded."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from tests.support.services import fresh_database
from worker.config import sqlalchemy_url
from worker.migrate import MIGRATIONS, migrate

pytestmark = pytest.mark.integration

#: The revision the per-signer ledger migrates from.
BEFORE = importlib.import_module("worker.migrations.versions.0013_ledger_per_signer").down_revision


@pytest.fixture
def database_before(postgres_server_url: str) -> Iterator[str]:
    with fresh_database(postgres_server_url) as url:
        engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
        try:
            with engine.begin() as connection:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, BEFORE)
        finally:
            engine.dispose()
        yield url


def record(conn: psycopg.Connection[Any], command_id: str, actor_id: str) -> None:
    """A ledger entry and its outcome event, as the worker wrote them before the migration."""
    body = {"command_id": command_id, "actor": {"id": actor_id}, "authenticated": True}
    row = conn.execute(
        "INSERT INTO outbox_events (event_id, event_type, command_id, request_id, routing_key, "
        "body) VALUES (gen_random_uuid(), 'transition.applied', %s, 'req-1', "
        "'transition.applied.approve', %s) RETURNING sequence",
        (command_id, json.dumps(body)),
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO processed_commands (command_id, payload_hash, event_sequence, request_id, "
        "outcome, processed_at) VALUES (%s, 'h', %s, 'req-1', 'transition.applied', "
        "now() - interval '10 days')",
        (command_id, row[0]),
    )


def test_entries_recorded_before_take_their_signer_s_namespace_and_the_default_window(
    database_before: str,
) -> None:
    # Given a signed deployment's ledger with an actor's entry and an expiry of the worker
    with psycopg.connect(database_before, autocommit=True) as conn:
        record(conn, "approve-1", "alice")
        record(conn, "expire-1", "system")
    # When it is migrated
    migrate(database_before)
    # Then each entry is its signer's, and kept 30 days from when it was recorded
    with psycopg.connect(database_before, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT command_id, namespace, keep_until - processed_at FROM processed_commands "
            "ORDER BY command_id"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("approve-1", "alice"), ("expire-1", "system")]
    assert {r[2].days for r in rows} == {30}
