"""``governance migrate``: idempotent, and safe when several processes run it at once."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import PATIENCE
from tests.support.processes import PROJECT_ROOT, service_env
from tests.support.services import fresh_database
from worker.migrate import migrate

pytestmark = pytest.mark.integration

TABLES = {"mutation_requests", "request_decisions", "processed_commands", "outbox_events"}


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    """A database with no schema at all, dropped afterwards."""
    with fresh_database(postgres_server_url) as url:
        yield url


def schema_of(url: str) -> dict[str, Any]:
    """The tables, indexes and Alembic version a database holds."""
    with psycopg.connect(url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        indexes = sorted(
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            ).fetchall()
        )
        versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    return {"tables": tables, "indexes": indexes, "versions": versions}


def migrate_after(url: str, start: Any, results: Any) -> None:
    """Process body: wait for the others, then migrate and report the revision."""
    start.wait(PATIENCE)
    try:
        results.put(("ok", migrate(url)))
    except Exception as exc:
        results.put(("error", repr(exc)))


def governance_migrate(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", "migrate", "--database-url", url],
        cwd=PROJECT_ROOT,
        env=service_env(url, "amqp://unused//"),
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
        check=False,
    )


def test_migrate_twice_leaves_the_schema_as_once(empty_database: str) -> None:
    # Given a migrated database
    first = migrate(empty_database)
    once = schema_of(empty_database)

    # When it is migrated again
    second = migrate(empty_database)

    # Then nothing changed and the revision is the same
    assert first == second
    assert once["tables"] >= TABLES
    assert schema_of(empty_database) == once
    assert once["versions"] == [first]


def test_governance_migrate_command_is_idempotent(empty_database: str) -> None:
    # When `governance migrate` runs twice on an empty database
    runs = [governance_migrate(empty_database) for _ in range(2)]

    # Then both succeed and report the same revision, the second finding the roles the first
    # created, and the schema is there once
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    first = [
        line.replace("(created)", "(exists)")
        for line in runs[0].stdout.splitlines()
        if not line.startswith("revoked ")
    ]
    assert first == runs[1].stdout.splitlines()
    assert "schema at revision" in runs[0].stdout
    assert schema_of(empty_database)["tables"] >= TABLES


@pytest.mark.slow
def test_three_processes_migrating_at_once_all_succeed_with_one_schema(
    empty_database: str,
) -> None:
    # Given three processes ready to migrate the same empty database
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    results = context.Queue()
    processes = [
        context.Process(target=migrate_after, args=(empty_database, start, results))
        for _ in range(3)
    ]

    # When they are released together
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=PATIENCE * 2) for _ in processes]
    for process in processes:
        process.join(PATIENCE)

    # Then every one succeeded at the same revision, and the schema exists exactly once
    assert [status for status, _ in outcomes] == ["ok"] * 3, outcomes
    assert len({revision for _, revision in outcomes}) == 1
    schema = schema_of(empty_database)
    assert schema["tables"] >= TABLES
    assert schema["versions"] == [outcomes[0][1]]
    assert all(process.exitcode == 0 for process in processes)
