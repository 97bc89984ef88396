"""A deployment's logins at work: a worker connected as a member of the database's worker
role (never its owner) does all its periodic work, and a reader login can use the read-only
commands, with no permission refused anywhere."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import migrated_database
from tests.integration.helpers import PATIENCE, pending, wait_until
from tests.support.commands import new_id, submit
from tests.support.database_logins import database_name, login_name, reader_login_url
from tests.support.processes import PROJECT_ROOT, WorkerProcess, service_env
from tests.support.signed import apply_command
from worker.outbox import mark_published

pytestmark = pytest.mark.system

PAST = "2020-01-01T00:00:00Z"


@dataclass(frozen=True)
class Deployment:
    """A database whose worker runs as the worker role, and what was left for it to do."""

    database_url: str
    broker_url: str
    worker: WorkerProcess
    #: A published event older than the log's retention (and its ledger row): to prune.
    expired_event: int
    #: An event written and never published: for the relay.
    unpublished_event: int
    #: A pending request past its deadline: for expiry.
    due_request: str


def _sequence(conn: psycopg.Connection[Any], command_id: str) -> int:
    row = conn.execute(
        "SELECT sequence FROM outbox_events WHERE command_id = %s", (command_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def deployment(
    postgres_server_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    log_dir = Path(tmp_path_factory.mktemp("roles-at-work"))
    with (
        migrated_database(postgres_server_url) as url,
        psycopg.connect(url, autocommit=True) as owner,
    ):
        old = submit(new_id())
        apply_command(owner, old)
        expired_event = _sequence(owner, old["command_id"])
        mark_published(owner, [expired_event])
        shift = timedelta(days=40)
        owner.execute(
            "UPDATE processed_commands"
            " SET processed_at = processed_at - %s, keep_until = keep_until - %s",
            [shift, shift],
        )
        owner.execute("UPDATE outbox_events SET created_at = created_at - %s", [shift])
        fresh = submit(new_id())
        apply_command(owner, fresh)
        unpublished_event = _sequence(owner, fresh["command_id"])
        due_request = pending(owner, expires_at=PAST)

        worker = WorkerProcess(
            url,
            broker_url,
            concurrency=1,
            log_path=log_dir / "worker.log",
            extra_env={
                "GOVERNANCE_RETENTION_INTERVAL": "1",
                "GOVERNANCE_RELAY_INTERVAL": "1",
                "GOVERNANCE_RELAY_GRACE_SECONDS": "0.1",
                "GOVERNANCE_EXPIRY_INTERVAL": "1",
            },
            extra_args=("-B", "--schedule", str(log_dir / "beat-schedule")),
        )
        try:
            worker.wait_ready()
            yield Deployment(url, broker_url, worker, expired_event, unpublished_event, due_request)
        finally:
            worker.stop()


def _scalar(database_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _maintenance_tasks(database_url: str) -> set[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT task FROM maintenance_runs")}


def test_the_worker_connects_as_a_member_of_the_worker_role(deployment: Deployment) -> None:
    database = database_name(deployment.database_url)
    login = login_name(database, "worker")

    # The worker's sessions are the login's
    wait_until(
        lambda: bool(
            _scalar(
                deployment.database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                database,
                login,
            )
        ),
        "a session of the worker's login",
    )
    # which is neither the owner nor a superuser, and holds only the worker role
    assert (
        _scalar(
            deployment.database_url,
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = %s",
            login,
        )
        is False
    )
    assert _scalar(
        deployment.database_url,
        "SELECT array_agg(g.rolname) FROM pg_auth_members AS m"
        " JOIN pg_roles AS g ON g.oid = m.roleid JOIN pg_roles AS u ON u.oid = m.member"
        " WHERE u.rolname = %s",
        login,
    ) == [f"{database}_worker"]


def test_the_worker_records_its_maintenance_runs(deployment: Deployment) -> None:
    wait_until(
        lambda: _maintenance_tasks(deployment.database_url) >= {"relay", "expiry"},
        "the relay's and the expiry's runs recorded",
    )


def test_the_worker_applies_retention(deployment: Deployment) -> None:
    # The old published event is pruned, and the log says how far
    wait_until(
        lambda: (
            _scalar(
                deployment.database_url,
                "SELECT pruned_through FROM log_horizon WHERE log = 'outbox'",
            )
            == deployment.expired_event
        ),
        "the log pruned through the expired event",
    )
    assert (
        _scalar(
            deployment.database_url,
            "SELECT count(*) FROM outbox_events WHERE sequence = %s",
            deployment.expired_event,
        )
        == 0
    )


def test_the_worker_relays_what_was_left_unpublished(deployment: Deployment) -> None:
    wait_until(
        lambda: (
            _scalar(
                deployment.database_url,
                "SELECT published_at IS NOT NULL FROM outbox_events WHERE sequence = %s",
                deployment.unpublished_event,
            )
            is True
        ),
        "the unpublished event relayed",
    )


def test_the_worker_expires_due_requests(deployment: Deployment) -> None:
    wait_until(
        lambda: (
            _scalar(
                deployment.database_url,
                "SELECT status FROM mutation_requests WHERE request_id = %s",
                deployment.due_request,
            )
            == "expired"
        ),
        "the due request expired",
    )


def test_no_permission_is_refused_to_the_worker(deployment: Deployment) -> None:
    # Given every periodic task run, and run again after that (what comes after their first
    # runs, and their refusals if any)
    test_the_worker_records_its_maintenance_runs(deployment)
    first = _scalar(deployment.database_url, "SELECT max(finished_at) FROM maintenance_runs")
    wait_until(
        lambda: (
            _scalar(
                deployment.database_url,
                "SELECT count(*) FROM maintenance_runs WHERE finished_at > %s",
                first,
            )
            == 2
        ),
        "the periodic tasks run again",
    )
    wait_until(
        lambda: _scalar(deployment.database_url, "SELECT count(*) FROM log_horizon") == 1,
        "retention run",
    )

    # Then the worker's log has no refusal in it
    assert deployment.worker.log_path is not None
    log = deployment.worker.log_path.read_text()
    assert "permission denied" not in log
    assert "InsufficientPrivilege" not in log


def _governance(database_url: str, broker_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=PROJECT_ROOT,
        env=service_env(database_url, broker_url),
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
        check=False,
    )


def test_a_reader_login_replays_the_log_from_its_start(
    postgres_server_url: str, broker_url: str
) -> None:
    # Given a database with one event in its log
    with (
        migrated_database(postgres_server_url) as url,
        psycopg.connect(url, autocommit=True) as owner,
    ):
        payload = submit(new_id())
        apply_command(owner, payload)

        # When a reader login replays the log from its start
        done = _governance(
            reader_login_url(url), broker_url, "watch", "--since-sequence", "0", "--count", "1"
        )

    # Then it is shown the event
    assert "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert f"applied submit on {payload['request_id']}" in done.stdout


def test_a_reader_login_is_told_of_the_logs_horizon(deployment: Deployment) -> None:
    # Given the log pruned through the expired event
    test_the_worker_applies_retention(deployment)

    # When a reader login asks to replay from before it
    done = _governance(
        reader_login_url(deployment.database_url),
        deployment.broker_url,
        "watch",
        "--since-sequence",
        "0",
        "--count",
        "1",
    )

    # Then it is told where the log starts (a usage error, not a failure to read)
    assert "Traceback" not in done.stderr
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        2,
        f"Error: events up to sequence {deployment.expired_event} are past the log's retention "
        f"horizon; cannot replay from sequence {deployment.expired_event} (start at "
        f"{deployment.expired_event + 1} or later)",
    )


def test_a_reader_login_reads_the_deployments_status(deployment: Deployment) -> None:
    test_the_worker_records_its_maintenance_runs(deployment)
    reader = reader_login_url(deployment.database_url)

    done = _governance(reader, deployment.broker_url, "status", "--json", "--inspect-timeout", "5")

    assert "Traceback" not in done.stderr
    assert done.returncode == 0, (done.stdout, done.stderr)
