"""The transactional outbox and its relay against a real broker, and the expiry sweep against
a real database: nothing committed is lost when the broker is away, nothing is published
twice by concurrent relays, and no due request expires twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import (
    Racer,
    RequestRow,
    applying,
    code_of,
    count,
    decisions_after,
    flush,
    pending,
    request_row,
    wait_for_lock_waiters,
)
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.ports import reserve_port
from tests.support.signed import apply_command
from worker.expiry import expire_due
from worker.outbox import EventPublisher, publish_outcomes, relay_unpublished
from worker.transaction import StoredOutcome

pytestmark = pytest.mark.integration

PAST = "2020-01-01T00:00:00Z"


def unreachable_broker_url() -> str:
    """An AMQP URL on a local port where nothing listens (connections are refused)."""
    return f"amqp://guest:guest@127.0.0.1:{reserve_port()}//"


def published_at(conn: psycopg.Connection[Any], sequence: int) -> Any:
    row = conn.execute(
        "SELECT published_at FROM outbox_events WHERE sequence = %s", (sequence,)
    ).fetchone()
    assert row is not None
    return row[0]


def unpublished(conn: psycopg.Connection[Any]) -> int:
    return count(conn, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL")


def relaying(
    publisher: EventPublisher, batch_size: int
) -> Callable[[psycopg.Connection[Any]], int]:
    """A relay sweep through ``publisher``, for a racer's connection."""
    return lambda conn: relay_unpublished(conn, publisher, batch_size=batch_size, grace_seconds=0)


# --------------------------------------------------------------------------- the outbox


@pytest.mark.slow
def test_an_event_the_broker_could_not_take_is_committed_and_later_relayed_once(
    db: psycopg.Connection[Any], events: EventListener, publisher: EventPublisher
) -> None:
    # Given a submit applied while the broker is unreachable
    stored = apply_command(db, submit(new_id()))
    down = EventPublisher(unreachable_broker_url())
    try:
        went_out = publish_outcomes(db, down, [stored])
    finally:
        down.close()

    # Then the transition is committed, its event waiting unpublished in the outbox
    assert went_out is False
    assert request_row(db, stored.event["request_id"]) == RequestRow("created", 1)
    assert published_at(db, stored.sequence) is None

    # When the relay runs with the broker back
    relayed = relay_unpublished(db, publisher, grace_seconds=0)
    again = relay_unpublished(db, publisher, grace_seconds=0)
    flush(events, publisher)

    # Then the event went out exactly once, marked published, and a second sweep had nothing
    assert relayed >= 1
    assert again == 0
    assert published_at(db, stored.sequence) is not None
    received = events.of(stored.event["command_id"])
    assert [e["event_id"] for e in received] == [stored.event["event_id"]]
    assert received[0]["sequence"] == stored.sequence


def test_two_relays_at_once_publish_each_row_once(
    db: psycopg.Connection[Any],
    database_url: str,
    broker_url: str,
    events: EventListener,
) -> None:
    # Given 30 committed events nobody published
    stored = [apply_command(db, submit(new_id())) for _ in range(30)]
    backlog = unpublished(db)
    publishers = [EventPublisher(broker_url), EventPublisher(broker_url)]
    barrier = threading.Barrier(2)

    # When two relays sweep at the same moment, in small batches
    relays = [Racer(database_url, relaying(p, batch_size=4), barrier) for p in publishers]
    for relay in relays:
        relay.start()
    totals = [relay.outcome() for relay in relays]
    for p in publishers:
        flush(events, p)
        p.close()

    # Then between them they published every row once, and each event arrived once
    assert sum(totals) == backlog
    assert unpublished(db) == 0
    for outcome in stored:
        assert [e["event_id"] for e in events.of(outcome.event["command_id"])] == [
            outcome.event["event_id"]
        ]


def test_relay_does_not_overtake_an_earlier_event_someone_else_holds(
    db: psycopg.Connection[Any],
    database_url: str,
    events: EventListener,
    publisher: EventPublisher,
) -> None:
    # Given a request with two unpublished events (submit, then approve)
    request_id = new_id()
    first = apply_command(db, submit(request_id, initial_status="pending"))
    second = apply_command(db, command("approve", request_id, 1))
    with psycopg.connect(database_url) as holder:
        # ... and the earlier one locked by another publisher that has not finished
        holder.execute(
            "SELECT sequence FROM outbox_events WHERE sequence = %s FOR UPDATE",
            (first.sequence,),
        )

        # When the relay sweeps meanwhile
        relay_unpublished(db, publisher, grace_seconds=0)

        # Then it leaves the later event alone rather than publish it out of order
        assert published_at(db, first.sequence) is None
        assert published_at(db, second.sequence) is None
        holder.rollback()

    # And once the earlier row is free the relay publishes both, in revision order
    relay_unpublished(db, publisher, grace_seconds=0)
    flush(events, publisher)
    received = [e for e in events.events if e.get("request_id") == request_id]
    assert [(e["event_id"], e["revision"]) for e in received] == [
        (first.event["event_id"], 1),
        (second.event["event_id"], 2),
    ]


def test_relay_skips_rows_another_relay_holds_and_publishes_the_rest(
    db: psycopg.Connection[Any],
    database_url: str,
    events: EventListener,
    publisher: EventPublisher,
) -> None:
    # Given two unpublished events of different requests, one held by another relay
    held = apply_command(db, submit(new_id()))
    free = apply_command(db, submit(new_id()))
    with psycopg.connect(database_url) as other_relay:
        other_relay.execute(
            "SELECT sequence FROM outbox_events WHERE sequence = %s FOR UPDATE", (held.sequence,)
        )

        # When the relay sweeps
        relay_unpublished(db, publisher, grace_seconds=0)

        # Then it published the free one without waiting for the held one
        assert published_at(db, free.sequence) is not None
        assert published_at(db, held.sequence) is None
        other_relay.rollback()
    relay_unpublished(db, publisher, grace_seconds=0)
    flush(events, publisher)
    assert len(events.of(held.event["command_id"])) == 1
    assert len(events.of(free.event["command_id"])) == 1


# --------------------------------------------------------------------------- expiry


def sweep_until_done(conn: psycopg.Connection[Any]) -> list[StoredOutcome]:
    """Sweep in small batches until a sweep finds nothing it can claim."""
    outcomes: list[StoredOutcome] = []
    while batch := expire_due(conn, batch_size=5):
        outcomes.extend(batch)
    return outcomes


def test_two_sweepers_at_once_expire_each_due_request_exactly_once(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given 40 pending requests whose deadline has passed
    request_ids = [pending(db, expires_at=PAST) for _ in range(40)]
    barrier = threading.Barrier(2)

    # When two sweepers start at the same moment on their own connections
    sweepers = [Racer(database_url, sweep_until_done, barrier) for _ in range(2)]
    for sweeper in sweepers:
        sweeper.start()
    outcomes = [o for sweeper in sweepers for o in sweeper.outcome()]

    # Then each request was expired by exactly one applied expire, one revision on
    expired = [o.event["request_id"] for o in outcomes if o.applied]
    mine = set(request_ids)
    assert sorted(r for r in expired if r in mine) == sorted(request_ids)
    for request_id in request_ids:
        assert request_row(db, request_id) == RequestRow("expired", 2)
        assert [t for _, _, t, _ in decisions_after(db, request_id, 1, "lifecycle")] == ["expired"]
        assert (
            count(
                db,
                "SELECT count(*) FROM processed_commands "
                "WHERE request_id = %s AND outcome = 'transition.applied' "
                "AND command_id LIKE 'expire-%%'",
                (request_id,),
            )
            == 1
        )


def test_a_sweep_holding_the_row_beats_an_approve_queued_behind_it(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given a pending request past its deadline
    request_id = pending(db, expires_at=PAST)
    with psycopg.connect(database_url, autocommit=True) as sweeper:
        # When a sweep has expired it but not committed yet (the test keeps the sweep's
        # transaction open), and an approve against the same revision queues behind it
        with sweeper.transaction():
            swept = expire_due(sweeper, batch_size=1000)
            approver = Racer(database_url, applying(command("approve", request_id, 1)))
            approver.start()
            wait_for_lock_waiters(db, [approver.backend_pid])
        approved: StoredOutcome = approver.outcome()

    # Then the sweep won, and the approve learned that the request expired
    assert request_id in {o.event["request_id"] for o in swept if o.applied}
    assert code_of(approved) == "concurrency_conflict"
    assert approved.event["rejection"]["current_status"] == "expired"
    assert request_row(db, request_id) == RequestRow("expired", 2)


def test_a_sweep_passes_over_a_request_an_approve_holds_and_the_approve_wins(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given a pending request past its deadline
    request_id = pending(db, expires_at=PAST)
    # When an approve has been applied but not committed, and a sweep runs meanwhile
    with (
        psycopg.connect(database_url, autocommit=True) as approver,
        approver.transaction(),
    ):
        approved = apply_command(approver, command("approve", request_id, 1))
        sweep = Racer(database_url, lambda conn: expire_due(conn, batch_size=1000))
        sweep.start()
        swept: list[StoredOutcome] = sweep.outcome()
        # Then the sweep skipped the held row instead of waiting for it
        assert request_id not in {o.event["request_id"] for o in swept}

    # And once the approve commits the request is approved and no longer due
    assert approved.applied
    with psycopg.connect(database_url, autocommit=True) as later:
        assert request_id not in {o.event["request_id"] for o in expire_due(later)}
    assert request_row(db, request_id) == RequestRow("approved", 2)


def test_an_approve_and_a_sweep_released_together_have_one_winner(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given a pending request past its deadline
    request_id = pending(db, expires_at=PAST)
    barrier = threading.Barrier(2)

    # When an approve and a sweep start at the same moment
    approver = Racer(database_url, applying(command("approve", request_id, 1)), barrier)
    sweeper = Racer(database_url, lambda conn: expire_due(conn, batch_size=1000), barrier)
    approver.start()
    sweeper.start()
    approved: StoredOutcome = approver.outcome()
    swept = [o for o in sweeper.outcome() if o.event["request_id"] == request_id]

    # Then exactly one of them moved the request, and the row shows that one
    expired = [o for o in swept if o.applied]
    assert approved.applied != bool(expired)
    final = request_row(db, request_id)
    assert final.revision == 2
    assert final.status == ("approved" if approved.applied else "expired")
    if not approved.applied:
        assert approved.event["rejection"]["current_status"] == "expired"
    assert len(decisions_after(db, request_id, 1, "lifecycle")) == 1
