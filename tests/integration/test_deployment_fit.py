"""A worker applies nothing on a database that does not fit it: every connection its pool
opens is checked for the schema revision this release migrates to and the deployment's
trust mode, so a worker that could not check at start (its database was down) still never
applies a command under another mode."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from tests.support.commands import submit
from worker import database, startup
from worker.config import Settings
from worker.errors import InfrastructureError
from worker.runtime import Runtime


def settings_for(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url, db_acquire_timeout=2.0, db_reconnect_timeout=2.0, **overrides
    )


def test_the_pool_hands_out_connections_of_a_database_that_fits(database_url: str) -> None:
    pool = database.create_pool(settings_for(database_url))
    try:
        with pool.connection(timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close(timeout=5)


def test_the_pool_hands_out_no_connection_to_a_worker_of_another_trust_mode(
    database_url: str,
) -> None:
    # Given a signed deployment and a development-mode worker's pool (its start-up check
    # could not run: the database was down then)
    pool = database.create_pool(settings_for(database_url, auth="off"))
    try:
        # Then it never gets a connection to apply anything with
        with pytest.raises(PoolTimeout), pool.connection(timeout=3):
            pass
    finally:
        pool.close(timeout=5)


def test_a_command_handed_to_a_worker_of_another_trust_mode_is_an_infrastructure_fault(
    database_url: str, broker_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given a development-mode worker's runtime on a signed deployment
    runtime = Runtime(settings_for(database_url, auth="off", broker_url=broker_url))
    command = submit(request_id="req-unfit-mode")
    try:
        # When it is handed a command, it is retried later, not applied nor rejected
        with pytest.raises(InfrastructureError):
            runtime.handle(command)
    finally:
        runtime.close()
    # And the database holds no trace of it
    row = db.execute(
        "SELECT count(*) FROM processed_commands WHERE command_id = %s", (command["command_id"],)
    ).fetchone()
    assert row == (0,)


def test_a_database_at_this_release_s_schema_and_mode_fits(db: psycopg.Connection[Any]) -> None:
    assert startup.deployment_problem(db, "signed") is None


def test_a_schema_of_an_older_release_is_named_with_the_way_out() -> None:
    older = "0001"

    problem = startup.schema_problem(older)

    assert problem is not None
    assert f"at revision {older}, this worker needs {startup.schema_head()}" in problem
    assert "governance migrate" in problem


def test_a_schema_of_a_newer_release_is_named_as_unknown() -> None:
    problem = startup.schema_problem("9999_from_the_future")

    assert problem is not None
    assert "at revision 9999_from_the_future, which this worker" in problem
    assert "newer release" in problem


def test_a_database_never_migrated_is_told_to_migrate() -> None:
    assert startup.schema_problem(None) == (
        "the database has no schema: run `governance migrate` before starting workers"
    )
