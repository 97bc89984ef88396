"""Outcome events are signed where they are built, stored signed, published as stored; the
library's consumers act only on events that verify (real PostgreSQL and RabbitMQ)."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from governance.events import with_sequence
from producer.client import OutcomeListener
from producer.event_proof import BAD_SIGNATURE, UNSIGNED, EventVerifier
from producer.keys import generate
from producer.outcomes import AwaitedCommand
from producer.signing import sign_event
from producer.subscriptions import EventFilter, Subscription
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import trusted_worker_keys, worker_key
from tests.support.signed import DEVELOPMENT, apply_command, apply_commands
from worker import event_signing
from worker.outbox import EventPublisher, publish_outcomes, relay_unpublished
from worker.transaction import StoredOutcome


def stored_body(db: psycopg.Connection[Any], sequence: int) -> dict[str, Any]:
    row = db.execute("SELECT body FROM outbox_events WHERE sequence = %s", (sequence,)).fetchone()
    assert row is not None
    return dict(row[0])


@pytest.fixture
def restores_the_worker_key() -> Iterator[None]:
    """The test changes the key this process signs with; the tests' worker key after it."""
    try:
        yield
    finally:
        event_signing.install(worker_key())


def test_an_event_is_stored_with_its_sequence_and_its_workers_proof(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    stored = apply_command(db, submit(new_id()))

    body = stored_body(db, stored.sequence)
    assert body == stored.event
    assert body["sequence"] == stored.sequence
    assert body["proof"]["key_id"] == worker_key().key_id
    assert EventVerifier.registry(database_url).check(body).verified


def test_each_event_of_a_batch_is_signed_over_its_own_sequence(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    request_id = new_id()
    results = apply_commands(
        db,
        [
            submit(request_id, initial_status="created"),
            command("move_to_pending", request_id, 1, args={"pending_reason": "manual_review"}),
            command("approve", request_id, 9),
        ],
    )

    events = [r.event for r in results if isinstance(r, StoredOutcome)]
    verifier = EventVerifier.registry(database_url)
    assert [verifier.check(e).verified for e in events] == [True, True, True]
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3


def test_a_redelivered_command_announces_its_outcome_with_the_same_proof(
    db: psycopg.Connection[Any],
) -> None:
    payload = submit(new_id())
    first = apply_command(db, payload)

    again = apply_command(db, payload)

    assert again.event == first.event


def test_the_relay_publishes_the_event_as_its_writer_signed_it(
    db: psycopg.Connection[Any],
    events: EventListener,
    publisher: EventPublisher,
    restores_the_worker_key: None,
) -> None:
    # Given an event committed and left unpublished by the worker that wrote it
    stored = apply_command(db, submit(new_id()))

    # When a relay of another worker (another key) publishes it
    event_signing.install(generate("other-worker"))
    relay_unpublished(db, publisher, grace_seconds=0)

    # Then the event published is the one stored, with its writer's proof
    received = events.wait_for([stored.event["command_id"]])[stored.event["command_id"]]
    assert received == stored.event
    assert received["proof"]["key_id"] == worker_key().key_id


def test_a_worker_without_a_key_publishes_events_with_a_null_proof_in_development_mode(
    db: psycopg.Connection[Any], restores_the_worker_key: None
) -> None:
    event_signing.install(None)

    stored = apply_command(db, submit(new_id()), DEVELOPMENT)

    assert (stored.event["authenticated"], stored.event["proof"]) == (False, None)


# --------------------------------------------------------------------------- consumers


def applied_event(request_id: str, command_id: str, to_status: str) -> dict[str, Any]:
    return with_sequence(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "transition.applied",
            "occurred_at": "2026-12-07T10:00:00Z",
            "command_id": command_id,
            "command_type": "approve",
            "request_id": request_id,
            "actor": {"id": "alice", "name": "Alice", "type": "user"},
            "authenticated": True,
            "to_status": to_status,
            "revision": 2,
        },
        1,
    )


def test_send_and_wait_is_answered_by_the_genuine_outcome_not_a_forged_one(
    broker_url: str, publisher: EventPublisher
) -> None:
    # Given a waiter for a command's outcome
    listener = OutcomeListener(broker_url, trusted_worker_keys())
    listener.start()
    try:
        command_id = new_id("cmd")
        arrivals: queue.SimpleQueue[int] = queue.SimpleQueue()
        waiter = listener.register(AwaitedCommand(command_id, "alice"), 0, arrivals)

        # When a forged (unsigned) outcome arrives first, then the worker's signed one
        forged = {**applied_event("req", command_id, "approved"), "proof": None}
        genuine = sign_event(applied_event("req", command_id, "rejected"), worker_key())
        publisher.publish(forged, "transition.applied.approve")
        publisher.publish(genuine, "transition.applied.approve")

        # Then the waiter gets the genuine one, and the forged one was counted
        assert arrivals.get(timeout=30) == 0
        assert waiter.event == genuine
        assert listener.verifier.refused[UNSIGNED] == 1
    finally:
        listener.close()


def test_a_forged_copy_of_an_event_does_not_shadow_the_genuine_event_of_that_id(
    broker_url: str, publisher: EventPublisher
) -> None:
    request_id = new_id()
    with Subscription(
        broker_url, EventFilter.of(request_ids=[request_id]), verifier=trusted_worker_keys()
    ) as subscription:
        # Given a forged copy carrying the genuine event's id, published ahead of it
        genuine = sign_event(applied_event(request_id, new_id("cmd"), "approved"), worker_key())
        forged = {**genuine, "to_status": "rejected"}
        publisher.publish(forged, "transition.applied.approve")
        publisher.publish(genuine, "transition.applied.approve")

        # When the subscriber takes the next event
        got = subscription.get(timeout=30)

        # Then it is the genuine one, verified; the forgery was dropped and counted
        assert got == genuine
        assert subscription.last_verified is True
        assert dict(subscription.verifier.refused) == {BAD_SIGNATURE: 1}


def test_a_development_mode_subscriber_takes_an_unsigned_unauthenticated_event(
    broker_url: str, publisher: EventPublisher
) -> None:
    request_id = new_id()
    verifier = EventVerifier.trusting([], require_signed=False)
    with Subscription(
        broker_url, EventFilter.of(request_ids=[request_id]), verifier=verifier
    ) as subscription:
        unsigned = {
            **applied_event(request_id, new_id("cmd"), "approved"),
            "authenticated": False,
            "proof": None,
        }
        publisher.publish(unsigned, "transition.applied.approve")

        assert subscription.get(timeout=30) == unsigned
        assert subscription.last_verified is False


def test_the_published_event_verifies_after_the_writer_publishes_it(
    db: psycopg.Connection[Any], events: EventListener, publisher: EventPublisher
) -> None:
    stored = apply_command(db, submit(new_id()))

    assert publish_outcomes(db, publisher, [stored])

    received = events.wait_for([stored.event["command_id"]])[stored.event["command_id"]]
    assert received == stored.event
    assert trusted_worker_keys().check(received).verified
