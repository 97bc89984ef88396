"""Batch mode: many commands per guarded transaction, with every guarantee of the single path.

Directly through ``apply_commands`` and ``apply_batch`` on PostgreSQL, and end to end through a
real ``celery -A worker worker`` started with ``GOVERNANCE_BATCH_SIZE``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON_HEADER
from producer.audit import verify_request
from tests.integration.helpers import (
    PATIENCE,
    Sender,
    code_of,
    get_all,
    request_row,
    submitted,
)
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.processes import WorkerProcess
from tests.support.signed import apply_commands
from tests.system.harness import wait_until
from worker.outbox import publication_plan
from worker.transaction import NotACommand, StoredOutcome


def outcome_codes(results: list[Any]) -> list[str | None]:
    return [code_of(r) if isinstance(r, StoredOutcome) else "not-a-command" for r in results]


def test_a_batch_decides_each_command_against_the_request_as_the_batch_left_it(
    db: psycopg.Connection[Any],
) -> None:
    # Given a submit and a chain of commands on the same new request, in one batch
    request_id = new_id()
    batch = [
        submit(request_id),
        command("approve", request_id, 1),
        command("move_to_pending", request_id, 2, args={"pending_reason": "quota"}),
        command("approve", request_id, 3),
    ]
    # When the batch is applied in one transaction
    results = apply_commands(db, batch)
    # Then every command was applied in order, revision by revision
    assert outcome_codes(results) == [None, None, None, None]
    assert [r.event["revision"] for r in results if isinstance(r, StoredOutcome)] == [1, 2, 3, 4]
    assert request_row(db, request_id).revision == 4


def test_a_batch_that_changes_one_request_many_times_keeps_its_history_in_order(
    db: psycopg.Connection[Any],
) -> None:
    # Given a chain of commands on one new request, with another request's submit among them
    request_id, other = new_id(), new_id()
    batch = [
        submit(request_id, initial_status="created"),
        submit(other),
        command("move_to_pending", request_id, 1, args={"pending_reason": "quota"}),
        command("approve", request_id, 2),
        command("mark_executed", request_id, 3),
    ]
    # When the batch is applied in one transaction (each table written by one statement)
    results = apply_commands(db, batch)
    # Then the events are logged in the order the batch decided them
    assert outcome_codes(results) == [None] * 5
    sequences = [r.sequence for r in results if isinstance(r, StoredOutcome)]
    assert sequences == sorted(sequences)
    # And the request holds the last state, its decisions and proofs one per revision
    assert (request_row(db, request_id).revision, request_row(db, request_id).status) == (
        4,
        "executed",
    )
    decisions = db.execute(
        "SELECT revision FROM request_decisions WHERE request_id = %s ORDER BY id", [request_id]
    ).fetchall()
    assert sorted({row[0] for row in decisions}) == [1, 2, 3, 4]
    proofs = db.execute(
        "SELECT revision FROM command_proofs WHERE request_id = %s ORDER BY revision",
        [request_id],
    ).fetchall()
    assert [row[0] for row in proofs] == [1, 2, 3, 4]
    # And every command's ledger row points at its own event
    ledger = dict(
        db.execute(
            "SELECT command_id, event_sequence FROM processed_commands WHERE command_id = ANY(%s)",
            [[c["command_id"] for c in batch]],
        ).fetchall()
    )
    assert [ledger[c["command_id"]] for c in batch] == sequences
    # And the decision chain of the request verifies
    findings = verify_request(db, request_id)
    assert findings is not None and findings.ok, findings.lines()


def test_two_commands_on_one_snapshot_in_one_batch_have_one_winner(
    db: psycopg.Connection[Any],
) -> None:
    # Given a request at revision 1 and two commands decided on that snapshot
    request_id = submitted(db)
    approve = command("approve", request_id, 1)
    cancel = command("cancel", request_id, 1)
    # When both come in the same batch
    results = apply_commands(db, [approve, cancel])
    # Then the first is applied and the second loses with the revision it lost to
    assert outcome_codes(results) == [None, "concurrency_conflict"]
    loser = results[1]
    assert isinstance(loser, StoredOutcome)
    rejection = loser.event["rejection"]
    assert (rejection["expected_revision"], rejection["current_revision"]) == (1, 2)
    assert rejection["current_status"] == "approved"


def test_the_same_command_twice_in_a_batch_is_applied_once(db: psycopg.Connection[Any]) -> None:
    # Given a command delivered twice within one batch
    request_id = submitted(db)
    approve = command("approve", request_id, 1)
    # When the batch is applied
    first, second = apply_commands(db, [approve, dict(approve)])
    # Then the second is the first's recorded outcome
    assert isinstance(first, StoredOutcome) and isinstance(second, StoredOutcome)
    assert second.replayed and second.event["event_id"] == first.event["event_id"]
    assert request_row(db, request_id).revision == 2


def test_a_reused_command_id_in_a_batch_is_a_duplicate(db: psycopg.Connection[Any]) -> None:
    request_id = submitted(db)
    approve = command("approve", request_id, 1)
    impostor = command("cancel", request_id, 1, command_id=approve["command_id"])
    results = apply_commands(db, [approve, impostor])
    assert outcome_codes(results) == [None, "duplicate_command"]


def test_invalid_and_unanswerable_messages_in_a_batch_do_not_disturb_the_rest(
    db: psycopg.Connection[Any],
) -> None:
    request_id = submitted(db)
    batch: list[object] = [
        {"command_id": new_id("cmd"), "type": "approve", "request_id": request_id},
        "not a command",
        command("approve", request_id, 1),
    ]
    results = apply_commands(db, batch)
    assert isinstance(results[1], NotACommand)
    assert outcome_codes(results) == ["invalid_command", "not-a-command", None]


def test_a_redelivered_batch_is_answered_from_the_ledger(db: psycopg.Connection[Any]) -> None:
    request_id = submitted(db)
    batch = [command("approve", request_id, 1), command("cancel", request_id, 1)]
    first = apply_commands(db, batch)
    again = apply_commands(db, batch)
    assert [r.event["event_id"] for r in again if isinstance(r, StoredOutcome)] == [
        r.event["event_id"] for r in first if isinstance(r, StoredOutcome)
    ]
    assert all(isinstance(r, StoredOutcome) and r.replayed for r in again)
    assert request_row(db, request_id).revision == 2


def test_publication_plan_keeps_a_request_behind_an_event_published_elsewhere(
    db: psycopg.Connection[Any],
) -> None:
    # Given a request whose submit event is still unpublished (its writer has not got to it)
    request_id = submitted(db)
    other = submitted(db)
    db.execute("UPDATE outbox_events SET published_at = now() WHERE request_id = %s", (other,))
    # When a batch moves both requests on
    results = apply_commands(db, [command("approve", request_id, 1), command("approve", other, 1)])
    stored = [r for r in results if isinstance(r, StoredOutcome)]
    plan = publication_plan(stored)
    # Then the request with the unpublished predecessor waits, the other goes at once
    assert [s.event["request_id"] for s in plan.ready] == [other]
    assert [s.event["request_id"] for s in plan.behind] == [request_id]


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def batch_worker(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log_path = Path(tmp_path_factory.mktemp("batch-worker")) / "worker.log"
    worker = WorkerProcess(
        database_url,
        broker_url,
        concurrency=1,
        log_path=log_path,
        extra_env={"GOVERNANCE_BATCH_SIZE": "50", "GOVERNANCE_BATCH_LINGER_MS": "5"},
    )
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.mark.system
def test_a_batch_worker_answers_every_command_with_one_outcome(
    batch_worker: WorkerProcess,
    events: EventListener,
    broker_url: str,
    db: psycopg.Connection[Any],
) -> None:
    # Given 100 new requests, each with a submit, an approve and a stale cancel
    sender = Sender(broker_url)
    payloads: list[dict[str, Any]] = []
    request_ids = [new_id() for _ in range(100)]
    for request_id in request_ids:
        payloads += [
            submit(request_id),
            command("approve", request_id, 1),
            command("cancel", request_id, 1),
        ]
    # When they are sent to a worker in batch mode
    for payload in payloads:
        sender.send(payload)
    outcomes = events.wait_for([p["command_id"] for p in payloads], timeout=PATIENCE * 2)
    sender.close()
    # Then every command has its outcome, and each request took exactly two steps
    codes = Counter(
        e["rejection"]["code"] if "rejection" in e else "applied" for e in outcomes.values()
    )
    assert codes == {"applied": 200, "concurrency_conflict": 100}
    for request_id in request_ids[:10]:
        assert request_row(db, request_id).revision == 2
    # And every event is marked published (the mark follows the broker's confirm, which the
    # listener may have seen first)
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM outbox_events"
                " WHERE published_at IS NULL AND request_id = ANY(%s)",
                (request_ids,),
            ).fetchone()
            == (0,)
        ),
        PATIENCE,
        "every event of the batch marked published",
    )


def _raw(body: bytes | str) -> bytes:
    return body if isinstance(body, bytes) else body.encode()


@pytest.mark.system
def test_a_batch_worker_dead_letters_what_is_not_a_command(
    batch_worker: WorkerProcess, events: EventListener, broker_url: str
) -> None:
    # Given a message with no task header, one that is not JSON, and a valid command
    # (confirmed, so both are in the queue before the valid one is sent)
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        producer.publish(
            b"hello", exchange="", routing_key=COMMANDS_QUEUE, content_type="text/plain"
        )
        producer.publish(
            b"{not json",
            exchange="",
            routing_key=COMMANDS_QUEUE,
            content_type="application/json",
            headers={"task": "governance.apply_command", "id": new_id("task")},
        )
    sender = Sender(broker_url)
    valid = submit(new_id())
    sender.send(valid)
    sender.close()
    # When the worker has answered the valid one, and parked what it could not read
    events.wait_for([valid["command_id"]])
    ours = {b"hello", b"{not json"}
    dead: list[kombu.Message] = []

    def both_parked() -> bool:
        dead.extend(m for m in get_all(broker_url, DEAD_LETTER_QUEUE) if _raw(m.body) in ours)
        return len(dead) >= 2

    wait_until(both_parked, PATIENCE, "both messages parked")
    # Then each is in the dead-letter queue with the reason a per-task worker gives
    reasons = {_raw(m.body): str(m.headers[DEAD_LETTER_REASON_HEADER]) for m in dead}
    assert reasons[b"hello"].startswith("undecodable message: Refusing to deserialize")
    assert "untrusted content of type text/plain" in reasons[b"hello"]
    assert reasons[b"{not json"].startswith("undecodable message: Expecting property name")


def _consumers(broker_url: str, queue: str) -> int:
    with kombu.Connection(broker_url) as connection:
        return int(connection.default_channel.queue_declare(queue, passive=True).consumer_count)


@pytest.mark.system
@pytest.mark.parametrize(
    ("selection", "consumes_commands"),
    [((), True), (("-Q", "governance.maintenance"), False)],
    ids=["all-queues", "only-maintenance"],
)
def test_a_batch_worker_consumes_the_commands_only_when_its_queues_include_them(
    selection: tuple[str, ...],
    consumes_commands: bool,
    database_url: str,
    broker_url: str,
    tmp_path: Path,
) -> None:
    from tests.support.services import spare_vhost

    with spare_vhost(broker_url) as url:
        # Given a worker in the default (batch) mode, started with or without -Q
        worker = WorkerProcess(
            database_url, url, concurrency=1, log_path=tmp_path / "w.log", extra_args=selection
        )
        try:
            worker.wait_ready()
            # Then it consumes governance.commands exactly when its queues include it, and
            # the maintenance queue either way
            assert _consumers(url, COMMANDS_QUEUE) == (1 if consumes_commands else 0)
            assert _consumers(url, "governance.maintenance") == 1
        finally:
            worker.stop()
