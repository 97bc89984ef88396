"""A request's events reach the broker in revision order, whoever publishes them.

One publication decision serves a single command, a batch and an expiry sweep: an event of a
request that has unpublished events (a writer killed before its publish, a broker that was
down) goes out only behind them, and a recorded outcome that a redelivery announces again is
ordered like any other event of its request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import PATIENCE, Sender, flush, submitted, wait_for_events
from tests.support.commands import command
from tests.support.events import EventListener
from tests.support.processes import WorkerProcess
from tests.support.signed import apply_commands
from worker.outbox import EventPublisher, publication_plan, publish_outcomes
from worker.transaction import StoredOutcome


def published_request(db: psycopg.Connection[Any]) -> str:
    """A submitted request whose submit event has gone out."""
    request_id = submitted(db)
    db.execute("UPDATE outbox_events SET published_at = now() WHERE request_id = %s", (request_id,))
    return request_id


def committed_unpublished(db: psycopg.Connection[Any], payloads: list[dict[str, Any]]) -> None:
    """Apply commands whose publishes then fail (the broker was cut, the worker killed)."""
    for result in apply_commands(db, payloads):
        assert isinstance(result, StoredOutcome) and result.applied, result


def stored(results: list[Any]) -> list[StoredOutcome]:
    return [r for r in results if isinstance(r, StoredOutcome)]


def applied_revisions(listener: EventListener, request_id: str) -> list[int]:
    """The revisions of the request's applied events, first arrival of each."""
    seen: set[str] = set()
    revisions = []
    for event in listener.events:
        if event.get("request_id") != request_id or event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        if event["event_type"] == "transition.applied":
            revisions.append(event["revision"])
    return revisions


def two_steps(request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        command("approve", request_id, 1),
        command("move_to_pending", request_id, 2, args={"pending_reason": "quota"}),
    )


def test_a_replayed_outcome_waits_behind_older_unpublished_events_of_its_request(
    db: psycopg.Connection[Any], publisher: EventPublisher, events: EventListener
) -> None:
    # Given revisions 2 and 3 of a request committed, neither published
    request_id = published_request(db)
    second, third = two_steps(request_id)
    committed_unpublished(db, [second, third])
    # When the revision-3 command is redelivered first and its recorded outcome published
    (again,) = stored(apply_commands(db, [third]))
    assert again.replayed
    publish_outcomes(db, publisher, [again])
    flush(events, publisher)
    # Then revision 2 went out before revision 3
    assert applied_revisions(events, request_id) == [2, 3]


def test_the_same_command_twice_in_one_batch_is_published_for_each_delivery_behind_the_backlog(
    db: psycopg.Connection[Any], publisher: EventPublisher, events: EventListener
) -> None:
    # Given a request whose revision-2 event is unpublished
    request_id = published_request(db)
    second, third = two_steps(request_id)
    committed_unpublished(db, [second])
    # When one batch carries the revision-3 command twice
    outcomes = stored(apply_commands(db, [third, dict(third)]))
    plan = publication_plan(outcomes)
    # Then neither copy may go out at once; each delivery is answered, after revision 2
    assert plan.ready == ()
    assert [s.sequence for s in plan.behind] == [outcomes[0].sequence] * 2
    publish_outcomes(db, publisher, outcomes)
    flush(events, publisher)
    assert applied_revisions(events, request_id) == [2, 3]
    assert len([e for e in events.events if e["command_id"] == third["command_id"]]) == 2


def test_an_invalid_command_naming_a_request_is_ordered_among_its_events_in_a_batch(
    db: psycopg.Connection[Any], publisher: EventPublisher, events: EventListener
) -> None:
    # Given a request whose revision-2 event is unpublished
    request_id = published_request(db)
    second, third = two_steps(request_id)
    committed_unpublished(db, [second])
    # When a batch carries an invalid command naming that request, then a valid one on it
    invalid = command("approve", request_id, 2, args={"nonsense": True})
    outcomes = stored(apply_commands(db, [invalid, third]))
    plan = publication_plan(outcomes)
    # Then nothing of the request goes out ahead of its unpublished revision 2
    assert [s.request_id for s in plan.ready] == []
    publish_outcomes(db, publisher, outcomes)
    flush(events, publisher)
    assert applied_revisions(events, request_id) == [2, 3]


def test_events_of_a_request_without_a_backlog_go_out_at_once_in_sequence_order(
    db: psycopg.Connection[Any],
) -> None:
    request_id = published_request(db)
    second, third = two_steps(request_id)
    outcomes = stored(apply_commands(db, [third, second]))
    plan = publication_plan(outcomes)
    assert plan.behind == ()
    assert [s.sequence for s in plan.ready] == sorted(s.sequence for s in outcomes)


# --------------------------------------------------------------------------- a real worker


@pytest.fixture(scope="module", params=["per-task", "batch"])
def any_worker(
    request: pytest.FixtureRequest,
    database_url: str,
    broker_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A real worker, in per-task mode and in batch mode."""
    extra_env = {"GOVERNANCE_BATCH_SIZE": "20" if request.param == "batch" else "1"}
    log_path = Path(tmp_path_factory.mktemp(f"worker-{request.param}")) / "worker.log"
    worker = WorkerProcess(
        database_url, broker_url, concurrency=1, log_path=log_path, extra_env=extra_env
    )
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.mark.system
def test_a_redelivered_command_through_a_worker_publishes_the_backlog_first(
    any_worker: WorkerProcess, db: psycopg.Connection[Any], broker_url: str, events: EventListener
) -> None:
    # Given revisions 2 and 3 committed and unpublished (publishes failed, workers killed)
    request_id = published_request(db)
    second, third = two_steps(request_id)
    committed_unpublished(db, [second, third])
    # When the revision-3 command is delivered again, to a real worker
    sender = Sender(broker_url)
    sender.send(third)
    sender.close()
    wait_for_events(
        events,
        lambda got: len(applied_revisions(events, request_id)) == 2,
        "both revisions",
        timeout=PATIENCE,
    )
    # Then subscribers saw them in revision order
    assert applied_revisions(events, request_id) == [2, 3]
