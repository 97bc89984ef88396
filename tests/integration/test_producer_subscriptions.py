"""Subscriptions: filtered and deduplicated live events, durable subscribers, replay + live."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from governance.commands import Command
from producer import EventFilter, GovernanceClient, Queries, Subscription, replay
from tests.support.commands import new_id
from tests.support.events import EventListener
from tests.support.identities import Keyring, trusted_worker_keys
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration

INTENT = {"operation_name": "resize"}


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(broker_url, database_url, signing_key=Keyring()) as governance:
        yield governance


def submit(client: GovernanceClient, request_id: str, state_id: str = "vm-1") -> Command:
    return client.submit(
        request_id,
        state_id=state_id,
        state_type="vm",
        mutation_type="resize",
        intent=INTENT,
        actor="ci",
        pending_reason="manual_review",
    )


def next_events(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events; a generous bound only guards against a hang."""
    found = []
    for _ in range(count):
        event = subscription.get(timeout=30)
        assert event is not None, f"only {len(found)} of {count} events arrived"
        found.append(event)
    return found


def test_outcome_type_and_code_become_binding_keys() -> None:
    # Given filters on outcome, command type and rejection code
    # When their binding keys are computed / Then the broker does that filtering
    assert EventFilter().binding_keys() == ["transition.applied.*", "transition.rejected.*"]
    assert EventFilter.of(outcomes=["applied"], command_types=["approve"]).binding_keys() == [
        "transition.applied.approve"
    ]
    assert EventFilter.of(rejection_codes=["not_found"]).binding_keys() == [
        "transition.rejected.not_found"
    ]


def test_a_filtered_subscription_gets_only_matching_events(client: GovernanceClient) -> None:
    # Given a subscription to concurrency conflicts on one request
    request_id = new_id()
    with Subscription(
        client.broker_url,
        EventFilter.of(request_ids=[request_id], rejection_codes=["concurrency_conflict"]),
        verifier=trusted_worker_keys(),
    ) as subscription:
        # When the request is submitted and approved, a stale cancel conflicts, another request
        # is rejected as not found, and a stale expire conflicts
        client.send_and_wait(submit(client, request_id))
        client.send_and_wait(client.approve(request_id, expected_revision=1, actor="a"))
        first = client.send_and_wait(client.cancel(request_id, expected_revision=1, actor="b"))
        client.send_and_wait(client.approve(new_id(), expected_revision=1, actor="c"))
        last = client.send_and_wait(client.expire(request_id, expected_revision=1, actor="d"))

        # Then the subscriber sees exactly the two conflicts, in order
        events = next_events(subscription, 2)
    assert [e["event_id"] for e in events] == [first["event_id"], last["event_id"]]


def test_a_state_filter_is_applied_to_each_event(client: GovernanceClient) -> None:
    # Given a subscription to one state
    state = new_id("vm")
    with Subscription(
        client.broker_url, EventFilter.of(state_ids=[state]), verifier=trusted_worker_keys()
    ) as subscription:
        # When requests on another state and then on this one are submitted
        client.send_and_wait(submit(client, new_id(), state_id=new_id("vm")))
        wanted = client.send_and_wait(submit(client, new_id(), state_id=state))

        # Then only the one on this state is delivered
        (event,) = next_events(subscription, 1)
    assert event["event_id"] == wanted["event_id"]


def test_a_redelivered_outcome_is_delivered_once(
    client: GovernanceClient, events: EventListener
) -> None:
    # Given a subscription and a command whose outcome is published twice (sent twice)
    with Subscription(client.broker_url, verifier=trusted_worker_keys()) as subscription:
        command = submit(client, new_id())
        client.send_and_wait(command)
        client.send(command)
        while len(events.of(command.command_id)) < 2:
            events.wait_for([command.command_id])
            events.drain(0.2)
        # When a later event follows
        marker = client.send_and_wait(submit(client, new_id()))

        # Then the subscriber sees the outcome once, then the later event
        first, second = next_events(subscription, 2)
    assert (first["command_id"], second["event_id"]) == (command.command_id, marker["event_id"])


def test_callback_style_hands_each_event_to_the_callback(client: GovernanceClient) -> None:
    # Given a subscription run with a callback in its own thread
    request_id = new_id()
    received: list[dict[str, Any]] = []
    subscription = Subscription(
        client.broker_url, EventFilter.of(request_ids=[request_id]), verifier=trusted_worker_keys()
    )

    def on_event(event: dict[str, Any]) -> None:
        received.append(event)
        if len(received) == 2:
            subscription.stop()

    runner = threading.Thread(target=subscription.run, args=(on_event,))
    runner.start()

    # When two commands on the request are applied
    client.send_and_wait(submit(client, request_id))
    client.send_and_wait(client.approve(request_id, expected_revision=1, actor="a"))
    runner.join(timeout=60)
    subscription.close()

    # Then the callback got both, in revision order, and run returned
    assert not runner.is_alive()
    assert [e["revision"] for e in received] == [1, 2]


def test_a_durable_subscriber_restarted_mid_stream_misses_nothing_and_repeats_nothing(
    client: GovernanceClient,
) -> None:
    # Given a durable subscription on one state that has consumed 5 of 10 events, then stops
    name = new_id("audit")
    state = new_id("vm")
    only_state = EventFilter.of(state_ids=[state])
    first = Subscription(client.broker_url, only_state, name=name, verifier=trusted_worker_keys())
    before = client.send_all_and_wait([submit(client, new_id(), state) for _ in range(10)])
    consumed = next_events(first, 5)
    first.close()

    # When 10 more events are published while it is down, and it restarts under its name
    during = client.send_all_and_wait([submit(client, new_id(), state) for _ in range(10)])
    second = Subscription(client.broker_url, only_state, name=name, verifier=trusted_worker_keys())
    try:
        marker = client.send_and_wait(submit(client, new_id(), state))
        resumed = next_events(second, 16)
    finally:
        second.close()
        second.delete()

    # Then the two runs together saw all 20 events once each, and the marker came last
    published = [e["event_id"] for e in before + during if e is not None]
    seen = [e["event_id"] for e in consumed + resumed]
    assert seen[-1] == marker["event_id"]
    assert sorted(seen[:-1]) == sorted(published)
    assert len(set(seen)) == len(seen)


def test_replay_then_live_under_concurrent_writes_gives_every_event_once_in_revision_order(
    client: GovernanceClient, database_url: str
) -> None:
    # Given the log's current end, and a writer that keeps moving 20 requests back and forth:
    # rounds 1-3 before the replay starts, 4-6 racing with its bind and snapshot, and 7-8
    # only once the snapshot was taken (so both halves of the seam surely have events)
    since = Queries(database_url).last_sequence()
    requests = [new_id() for _ in range(20)]
    expected: set[str] = set()
    halfway = threading.Event()
    snapshot_taken = threading.Event()
    writer_error: list[BaseException] = []

    def write() -> None:
        try:
            outcomes = client.send_all_and_wait([submit(client, r) for r in requests])
            expected.update(e["event_id"] for e in outcomes if e)
            for round_ in range(1, 9):
                toggle = client.approve if round_ % 2 else client.move_to_pending
                extra = {} if round_ % 2 else {"pending_reason": "quota"}
                outcomes = client.send_all_and_wait(
                    [toggle(r, expected_revision=round_, actor="w", **extra) for r in requests]
                )
                expected.update(e["event_id"] for e in outcomes if e)
                if round_ == 3:
                    halfway.set()
                if round_ == 6:
                    assert snapshot_taken.wait(60)
        except BaseException as exc:  # reported by the assertion below
            writer_error.append(exc)
            halfway.set()

    writer = threading.Thread(target=write)
    writer.start()

    # When a subscriber replays from that point while the writer is midway, then follows live
    assert halfway.wait(60)
    received: list[dict[str, Any]] = []
    with replay(database_url, client.broker_url, since) as stream:
        deadline = time.monotonic() + 120  # guards against a hang only
        while time.monotonic() < deadline:
            if not writer.is_alive() and expected <= {e["event_id"] for e in received}:
                break
            event = stream.get(timeout=0.5)
            if event is not None:
                received.append(event)
                snapshot_taken.set()  # the first event comes from the log, after its snapshot
        history_part = stream.replayed
    writer.join()

    # Then every event arrived exactly once, both halves contributed, and per request the
    # revisions are in order
    assert writer_error == []
    ids = [e["event_id"] for e in received]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert len(expected) == 20 * 9
    assert 0 < history_part < len(received)
    revisions: dict[str, list[int]] = defaultdict(list)
    for event in received:
        revisions[event["request_id"]].append(event["revision"])
    assert all(revs == list(range(1, 10)) for revs in revisions.values())
