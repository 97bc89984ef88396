"""Retention: the ledger forgets commands past the idempotency window, the log drops
published events past its horizon, and neither ever loses what a guarantee still needs.

Each test ages its own rows by moving their timestamps back, on a database of its own, so
that pruning sees exactly the rows the test means it to.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from producer.audit import verify_request
from producer.event_log import EventsPruned, LogPosition, catch_up
from tests.conftest import migrated_database
from tests.integration.helpers import code_of, request_row, wait_until
from tests.support.commands import command, new_id, submit
from tests.support.processes import WorkerProcess
from tests.support.signed import apply_command
from worker.outbox import mark_published
from worker.retention import RetentionPolicy, apply_retention

DAY = timedelta(days=1)
POLICY = RetentionPolicy(ledger_window=30 * DAY, log_retention=30 * DAY)


@pytest.fixture
def db(postgres_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    with (
        migrated_database(postgres_server_url) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        yield conn


def age(conn: psycopg.Connection[Any], days: int) -> None:
    """Move every ledger row (with the instant it is kept until) and event written so far
    ``days`` into the past."""
    shift = timedelta(days=days)
    conn.execute(
        "UPDATE processed_commands "
        "SET processed_at = processed_at - %s, keep_until = keep_until - %s",
        [shift, shift],
    )
    conn.execute("UPDATE outbox_events SET created_at = created_at - %s", [shift])


def publish_all(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute("SELECT sequence FROM outbox_events WHERE published_at IS NULL").fetchall()
    mark_published(conn, [row[0] for row in rows])


def ledger_size(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM processed_commands").fetchone()
    assert row is not None
    return int(row[0])


def test_a_resend_within_the_window_replays_its_recorded_outcome(
    db: psycopg.Connection[Any],
) -> None:
    # Given a request approved 29 days ago
    request_id = new_id()
    apply_command(db, submit(request_id))
    approve = command("approve", request_id, 1)
    first = apply_command(db, approve)
    age(db, 29)
    # When retention runs and the approve is sent again
    apply_retention(db, POLICY)
    again = apply_command(db, approve)
    # Then the ledger still knew it: the same event, nothing applied twice
    assert again.replayed and again.event["event_id"] == first.event["event_id"]
    assert request_row(db, request_id).revision == 2


def test_a_resend_after_the_window_is_answered_by_the_revision_guard(
    db: psycopg.Connection[Any],
) -> None:
    # Given a request submitted and approved 31 days ago, the events long published
    request_id = new_id()
    original_submit = submit(request_id)
    apply_command(db, original_submit)
    approve = command("approve", request_id, 1)
    apply_command(db, approve)
    publish_all(db)
    age(db, 31)
    # When retention runs
    run = apply_retention(db, POLICY)
    # Then the ledger forgot both commands
    assert run.ledger_rows == 2 and ledger_size(db) == 0
    # And re-sent, each is judged anew and refused: nothing is applied twice
    resent_approve = apply_command(db, approve)
    resent_submit = apply_command(db, original_submit)
    assert code_of(resent_approve) == "concurrency_conflict"
    assert code_of(resent_submit) == "already_exists"
    assert request_row(db, request_id).revision == 2


def test_published_events_past_the_horizon_are_pruned_and_the_rest_kept(
    db: psycopg.Connection[Any],
) -> None:
    # Given an old published event, an old event never published, and a recent one
    old = new_id()
    apply_command(db, submit(old))
    publish_all(db)
    stuck = new_id()
    apply_command(db, submit(stuck))
    age(db, 40)
    recent = new_id()
    apply_command(db, submit(recent))
    # When retention runs
    run = apply_retention(db, POLICY)
    # Then only the old published event is gone: one still waiting for the broker stays
    kept = {row[0] for row in db.execute("SELECT request_id FROM outbox_events").fetchall()}
    assert run.log_events == 1
    assert kept == {stuck, recent}


def test_the_history_of_a_request_outlives_retention(db: psycopg.Connection[Any]) -> None:
    # Given a request whose commands and events are all past every limit
    request_id = new_id()
    apply_command(db, submit(request_id))
    apply_command(db, command("approve", request_id, 1))
    publish_all(db)
    age(db, 90)
    # When retention runs
    apply_retention(db, POLICY)
    # Then its decisions, their chain and the signed proofs are all still there and verify
    findings = verify_request(db, request_id, require_signed=True)
    assert findings is not None and findings.ok, findings.lines()
    assert request_row(db, request_id).revision == 2


def test_a_replay_from_below_the_horizon_is_refused_and_from_above_it_served(
    db: psycopg.Connection[Any],
) -> None:
    # Given two old published events pruned, then a new one
    for _ in range(2):
        apply_command(db, submit(new_id()))
    publish_all(db)
    age(db, 40)
    apply_retention(db, POLICY)
    newest = apply_command(db, submit(new_id()))
    row = db.execute("SELECT pruned_through FROM log_horizon").fetchone()
    assert row is not None
    horizon = int(row[0])
    # When a reader asks from the start of the log, it is told where the log now starts
    with pytest.raises(EventsPruned, match=f"start at {horizon + 1}"):
        list(catch_up(db, LogPosition(since=0)))
    # And a reader from the horizon on is served what is left
    events = [e for page in catch_up(db, LogPosition(since=horizon)) for e in page.events]
    assert [e["sequence"] for e in events] == [newest.sequence]


def test_a_run_is_bounded_and_the_next_run_goes_on(db: psycopg.Connection[Any]) -> None:
    # Given five old commands and a policy of one batch of two rows per run
    for _ in range(5):
        apply_command(db, submit(new_id()))
    publish_all(db)
    age(db, 40)
    small = RetentionPolicy(batch_size=2, max_batches=1)
    # When retention runs twice
    first = apply_retention(db, small)
    second = apply_retention(db, small)
    # Then each run pruned one batch and said the work was not done
    assert (first.ledger_rows, first.unfinished) == (2, True)
    assert (second.ledger_rows, second.unfinished) == (2, True)
    assert ledger_size(db) == 1


def test_a_log_kept_shorter_than_the_ledger_window_is_refused() -> None:
    with pytest.raises(ValueError, match="at least the ledger's idempotency window"):
        RetentionPolicy(ledger_window=30 * DAY, log_retention=7 * DAY)


def test_beat_runs_retention_on_its_interval(
    postgres_server_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a database with a command and its event long past every limit
    with migrated_database(postgres_server_url) as url, psycopg.connect(url, autocommit=True) as db:
        apply_command(db, submit(new_id()))
        publish_all(db)
        age(db, 40)
        # When a worker runs with its embedded beat scheduling retention every second
        worker = WorkerProcess(
            url,
            broker_url,
            concurrency=1,
            log_path=tmp_path / "worker.log",
            extra_env={"GOVERNANCE_RETENTION_INTERVAL": "1"},
            extra_args=("-B", "--schedule", str(tmp_path / "beat-schedule")),
        )
        try:
            worker.wait_ready()
            # Then the ledger row and the event are pruned by the scheduled run
            wait_until(
                lambda: ledger_size(db) == 0 and event_count(db) == 0, "retention to have run"
            )
        finally:
            worker.stop()


def event_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM outbox_events").fetchone()
    assert row is not None
    return int(row[0])
