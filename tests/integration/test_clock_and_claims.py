"""The decision clock and the expiry claim: a request's decision times never go backwards,
and a sweep holds locks only on the requests it claims."""

from __future__ import annotations

from typing import Any

import psycopg

from governance.codec import timestamp_from_wire
from tests.integration.helpers import Racer, applying, pending, submitted, wait_for_lock_waiters
from tests.support.commands import command
from worker import sql

PAST = "2020-01-01T00:00:00Z"


def test_a_decision_taken_after_waiting_for_the_lock_is_not_dated_before_the_last_change(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    request_id = submitted(db)
    with psycopg.connect(database_url) as holder:
        # Given a competing transaction that holds the request's lock ...
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (request_id,))
        # ... while a command's transaction starts (its clock is read now) and waits for it
        racer = Racer(database_url, applying(command("approve", request_id, 1)))
        racer.start()
        wait_for_lock_waiters(db, [racer.backend_pid])
        # When the holder changes the request later than that, and commits (as the owner,
        # past the guard that wants a revision and decisions with every change of a row)
        holder.execute("SET LOCAL session_replication_role = replica")
        changed = holder.execute(
            "UPDATE mutation_requests SET updated_at = clock_timestamp() "
            "WHERE request_id = %s RETURNING updated_at",
            (request_id,),
        ).fetchone()
        holder.commit()
    stored = racer.outcome()
    # Then the command's decision is dated no earlier than that change
    assert changed is not None
    occurred_at = timestamp_from_wire(stored.event["occurred_at"])
    assert occurred_at is not None and occurred_at >= changed[0]
    assert stored.event["decisions"][0]["occurred_at"] == stored.event["occurred_at"]


def test_an_expiry_claim_holds_locks_only_on_what_it_claims(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given fifty requests long overdue
    for _ in range(50):
        pending(db, expires_at=PAST)
    with psycopg.connect(database_url) as sweeper:
        # When a sweep claims a batch of five
        claimed = sweeper.execute(sql.CLAIM_DUE, {"batch_size": 5, "scan_size": 20}).fetchall()
        locks = sweeper.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        sweeper.rollback()
    # Then it holds five advisory locks, one for each request it claimed
    assert len(claimed) == 5
    assert locks == (5,)
