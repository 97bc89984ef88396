"""A worker starts only on a database that fits it: the schema this release migrates to, and
the trust mode pinned by migrate. ``governance migrate --auth signed|off`` records the
deployment's mode (signed by default, kept by a later run without ``--auth``), and a worker whose
``GOVERNANCE_AUTH`` differs refuses to start with one line saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.processes import WorkerProcess, run_governance
from tests.support.schema import upgrade_to
from tests.support.services import fresh_database, spare_vhost
from worker.migrate import migrate
from worker.startup import schema_head

#: A worker that refuses to start exits at once; this bounds the wait on a loaded machine.
EXIT_WAIT = 60


def recorded_mode(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT auth FROM deployment_settings").fetchone()
    assert row is not None
    return str(row[0])


def refusal(
    database_url: str, broker_url: str, tmp_path: Path, *, as_owner: bool = False, **env: str
) -> tuple[int, str]:
    """Start a worker with ``env`` on a virtual host of its own (were it to start, it would
    take no other test's commands); its exit code and log once it has stopped."""
    log_path = tmp_path / "worker.log"
    with spare_vhost(broker_url) as url:
        worker = WorkerProcess(
            database_url, url, concurrency=1, log_path=log_path, extra_env=env, as_owner=as_owner
        )
        try:
            code = worker.process.wait(EXIT_WAIT)
        finally:
            worker.kill()
            worker.stop()
    return code, log_path.read_text()


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    with fresh_database(postgres_server_url) as url:
        yield url


def test_a_development_worker_refuses_to_start_on_a_signed_deployment_saying_why(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a database migrated in the default mode (signed)
    # When a worker with GOVERNANCE_AUTH=off starts on it
    code, log = refusal(database_url, broker_url, tmp_path, GOVERNANCE_AUTH="off")
    # Then it exits with one line naming both modes and the way out
    assert code != 0
    lines = [line for line in log.splitlines() if "but the deployment's trust mode is" in line]
    assert lines, log[-2000:]
    assert "GOVERNANCE_AUTH=off but the deployment's trust mode is signed" in lines[0]
    assert "governance migrate --auth off" in lines[0]
    assert "ready." not in log


def test_a_signed_worker_refuses_to_start_on_a_development_deployment(
    development_database_url: str, broker_url: str, tmp_path: Path
) -> None:
    code, log = refusal(development_database_url, broker_url, tmp_path, GOVERNANCE_AUTH="signed")

    assert code != 0
    assert "GOVERNANCE_AUTH=signed but the deployment's trust mode is off" in log, log[-2000:]
    assert "ready." not in log


def test_a_worker_refuses_to_start_on_a_database_never_migrated(
    empty_database: str, broker_url: str, tmp_path: Path
) -> None:
    code, log = refusal(empty_database, broker_url, tmp_path)

    assert code != 0
    assert "the database has no schema: run `governance migrate`" in log, log[-2000:]
    assert "ready." not in log


def test_a_worker_refuses_to_start_on_a_schema_of_a_newer_release_naming_both_revisions(
    empty_database: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a database a newer release migrated (a revision this worker does not know)
    migrate(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_newer'")
    # When a worker of this release starts on it
    code, log = refusal(empty_database, broker_url, tmp_path)
    # Then it stops with one line naming both revisions
    assert code != 0
    line = f"at revision 9999_newer, which this worker (schema {schema_head()}) does not know"
    assert line in log, log[-2000:]
    assert "ready." not in log


def test_a_worker_refuses_to_start_on_a_schema_of_an_older_release_saying_to_migrate(
    empty_database: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a database an older release left (a revision before this release's)
    older = upgrade_to(empty_database, "0010")
    # When a worker of this release starts on it (as the owner: the worker role of this
    # release is granted by this release's migrate)
    code, log = refusal(empty_database, broker_url, tmp_path, as_owner=True)
    # Then it stops, naming both revisions and the way out
    assert code != 0
    expected = (
        f"schema is at revision {older}, this worker needs {schema_head()}: "
        "run `governance migrate`"
    )
    assert expected in log, log[-2000:]
    assert "ready." not in log


def test_migrate_records_signed_by_default_and_says_so(
    empty_database: str, broker_url: str
) -> None:
    done = run_governance(empty_database, broker_url, "migrate")

    assert done.returncode == 0, done.stderr
    assert "trust mode signed" in done.stdout
    assert recorded_mode(empty_database) == "signed"


def test_migrate_without_auth_keeps_the_recorded_mode(empty_database: str, broker_url: str) -> None:
    # Given a deployment migrated in development mode
    assert run_governance(empty_database, broker_url, "migrate", "--auth", "off").returncode == 0
    # When migrate runs again without --auth (an upgrade)
    done = run_governance(empty_database, broker_url, "migrate")
    # Then the mode stays off, and it says which mode is recorded
    assert done.returncode == 0, done.stderr
    assert recorded_mode(empty_database) == "off"
    assert "trust mode off" in done.stdout
    assert "changed" not in done.stdout


def test_changing_the_mode_needs_the_flag_and_says_so(empty_database: str, broker_url: str) -> None:
    assert run_governance(empty_database, broker_url, "migrate").returncode == 0

    done = run_governance(empty_database, broker_url, "migrate", "--auth", "off")

    assert done.returncode == 0, done.stderr
    assert recorded_mode(empty_database) == "off"
    assert "trust mode changed from signed to off" in done.stdout


def test_an_unknown_mode_is_refused_and_nothing_is_recorded(
    empty_database: str, broker_url: str
) -> None:
    assert run_governance(empty_database, broker_url, "migrate").returncode == 0

    done = run_governance(empty_database, broker_url, "migrate", "--auth", "none")

    assert done.returncode == 2
    assert recorded_mode(empty_database) == "signed"


def test_a_worker_whose_login_may_not_read_the_schema_refuses_to_start_saying_why(
    empty_database: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a database an older release left, whose worker role this release has not granted
    upgrade_to(empty_database, "0010")
    # When a worker of this release starts on it as a member of the worker role
    code, log = refusal(empty_database, broker_url, tmp_path)
    # Then it stops with one line saying what to do, instead of starting unchecked
    assert code != 0
    assert "may not read the deployment's schema" in log, log[-2000:]
    assert "run `governance migrate` with this release" in log
    assert "ready." not in log
