"""End to end: a real ``celery -A worker worker`` process, commands sent by a plain Celery
client with ``send_task``, outcomes read from a queue bound to ``governance.events``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kombu
import psycopg
import pytest

from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_REASON_HEADER
from tests.integration.helpers import (
    PATIENCE,
    Sender,
    chain,
    ledger_snapshot,
    request_row,
    row_lock_held,
    run_processes,
    send_and_wait,
    send_in_process,
    wait_for_events,
    wait_until,
)
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.processes import WorkerProcess
from worker.deadletter import DEAD_LETTERS

pytestmark = [pytest.mark.integration, pytest.mark.system]


def submitted_pending(sender: Sender, events: EventListener) -> str:
    request_id = new_id()
    event = send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    assert event["event_type"] == "transition.applied", event
    return request_id


def distinct_events(events: EventListener, command_id: str) -> int:
    """How many different events (by event_id) a command was answered with."""
    return len({e["event_id"] for e in events.of(command_id)})


def events_of(events: EventListener, command_id: str, at_least: int) -> list[dict[str, Any]]:
    wait_for_events(
        events,
        lambda received: sum(e["command_id"] == command_id for e in received) >= at_least,
        f"{at_least} event(s) of {command_id}",
    )
    return events.of(command_id)


# --------------------------------------------------------------------------- the contract


def test_outcome_events_carry_the_contract_message_properties(
    running_worker: WorkerProcess, sender: Sender, events: EventListener
) -> None:
    # Given a pending request
    request_id = submitted_pending(sender, events)

    # When one command is applied and another loses on the same revision
    approve = command("approve", request_id, 1)
    cancel = command("cancel", request_id, 1)
    applied = send_and_wait(sender, events, approve)
    rejected = send_and_wait(sender, events, cancel)

    # Then each outcome is a persistent JSON message identified by its event_id and routed
    # by its outcome
    assert applied["event_type"] == "transition.applied"
    assert (applied["revision"], applied["to_status"]) == (2, "approved")
    assert rejected["rejection"]["code"] == "concurrency_conflict"
    properties = {
        event["command_id"]: message
        for event, message in zip(events.events, events.messages, strict=True)
    }
    for event, routing_key in (
        (applied, "transition.applied.approve"),
        (rejected, "transition.rejected.concurrency_conflict"),
    ):
        message = properties[event["command_id"]]
        assert message["content_type"] == "application/json"
        assert message["delivery_mode"] == 2
        assert message["message_id"] == event["event_id"]
        assert message["routing_key"] == routing_key
        assert isinstance(event["sequence"], int)


# --------------------------------------------------------------------------- idempotency


@pytest.mark.parametrize("outcome", ["applied", "rejected"])
def test_a_redelivered_command_is_answered_again_with_the_same_event(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
    outcome: str,
) -> None:
    # Given a command that was applied (or rejected) and answered
    request_id = submitted_pending(sender, events)
    payload = command("approve", request_id, 1 if outcome == "applied" else 7)
    first = send_and_wait(sender, events, payload)
    assert first["event_type"] == f"transition.{outcome}"
    before = ledger_snapshot(db, request_id)

    # When the very same command is sent again
    sender.send(dict(payload))
    answers = events_of(events, payload["command_id"], at_least=2)

    # Then the recorded event is published again (same event_id and sequence), nothing changed
    assert {(e["event_id"], e["sequence"]) for e in answers} == {
        (first["event_id"], first["sequence"])
    }
    assert ledger_snapshot(db, request_id) == before


def test_a_reused_command_id_with_another_payload_is_answered_as_duplicate_command(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    # Given an applied approve
    request_id = submitted_pending(sender, events)
    approve = command("approve", request_id, 1)
    send_and_wait(sender, events, approve)
    before = ledger_snapshot(db, request_id)

    # When a different command arrives under its command_id
    sender.send(command("cancel", request_id, 2, command_id=approve["command_id"]))
    wait_for_events(
        events,
        lambda received: any(
            e["command_id"] == approve["command_id"] and "rejection" in e for e in received
        ),
        "the answer to the reused command_id",
    )

    # Then it is answered as a duplicate and changes nothing
    rejections = [e for e in events.of(approve["command_id"]) if "rejection" in e]
    assert [e["rejection"]["code"] for e in rejections] == ["duplicate_command"]
    assert ledger_snapshot(db, request_id)["row"] == before["row"]
    assert ledger_snapshot(db, request_id)["decisions"] == before["decisions"]


# --------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_fifty_commands_from_four_sender_processes_get_one_applied_and_fifty_events(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    broker_url: str,
    db: psycopg.Connection[Any],
) -> None:
    # Given a pending request at revision 1 and 50 commands against revision 1
    request_id = submitted_pending(sender, events)
    kinds = ("approve", "reject", "cancel")
    payloads = [command(kinds[i % 3], request_id, 1) for i in range(50)]

    # When four client processes send them at once (released by a barrier)
    command_ids = [p["command_id"] for p in payloads]
    sent = run_processes(send_in_process, broker_url, payloads, processes=4)
    outcomes = events.wait_for(command_ids, timeout=PATIENCE * 2)

    # Then all 50 are answered: one applied, 49 concurrency conflicts
    codes = sorted(
        e["rejection"]["code"] if "rejection" in e else "applied" for e in outcomes.values()
    )
    assert sorted(sent) == sorted(command_ids)
    assert codes == ["applied"] + ["concurrency_conflict"] * 49
    assert request_row(db, request_id).revision == 2
    # (delivery is at least once: a copy of an event is the same event, by event_id)
    dups = [events.of(c) for c in command_ids if distinct_events(events, c) != 1]
    print(
        "DUPS",
        [
            [(e["event_id"], e["event_type"], e.get("rejection"), e["sequence"]) for e in d]
            for d in dups
        ],
    )
    assert [distinct_events(events, command_id) for command_id in command_ids] == [1] * 50


@pytest.mark.slow
def test_a_chain_of_200_transitions_ends_at_revision_200_with_events_in_revision_order(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    # Given a pending request at revision 1
    request_id = submitted_pending(sender, events)

    # When 199 transitions follow, each sent once the previous one was answered
    for payload in chain(request_id, first_revision=1, length=199):
        event = send_and_wait(sender, events, payload)
        assert event["event_type"] == "transition.applied", event

    # Then the request is at revision 200, and its events (as received and as logged) are in
    # revision order; a copy (at-least-once delivery) never arrives after a later revision
    assert request_row(db, request_id).revision == 200
    received = [e for e in events.events if e.get("request_id") == request_id]
    assert [e["revision"] for e in received] == sorted(e["revision"] for e in received)
    first_copies = {e["event_id"]: e["revision"] for e in reversed(received)}
    assert sorted(first_copies.values()) == list(range(1, 201))
    logged = db.execute(
        "SELECT (body->>'revision')::int FROM outbox_events "
        "WHERE request_id = %s ORDER BY sequence",
        (request_id,),
    ).fetchall()
    assert [row[0] for row in logged] == list(range(1, 201))


# --------------------------------------------------------------------------- dead letters


@dataclass(frozen=True)
class Malformed:
    """A message that is not a command, sent with a marker to find it again."""

    name: str
    send: Callable[[Sender, str], None]
    reason: str


def _raw(sender: Sender, body: bytes, content_type: str, headers: dict[str, Any]) -> None:
    with sender.client.connection_for_write() as connection:
        producer = kombu.Producer(connection.default_channel)
        producer.publish(
            body,
            exchange=kombu.Exchange(COMMANDS_QUEUE, type="direct"),
            routing_key=COMMANDS_QUEUE,
            content_type=content_type,
            content_encoding="utf-8",
            headers=headers,
        )


def _task_headers() -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    return {"task": "governance.apply_command", "id": task_id, "root_id": task_id}


MALFORMED = [
    Malformed(
        "not-json",
        lambda s, marker: _raw(
            s, f"{{not json {marker}".encode(), "application/json", _task_headers()
        ),
        "undecodable",
    ),
    Malformed(
        "not-a-task-message",
        lambda s, marker: _raw(s, f'{{"marker": "{marker}"}}'.encode(), "application/json", {}),
        "no task header",
    ),
    Malformed("json-list", lambda s, marker: s.send([marker]), "command_id"),
    Malformed("json-string", lambda s, marker: s.send(marker), "command_id"),
    Malformed(
        "object-without-command-id",
        lambda s, marker: s.send({"type": "approve", "marker": marker}),
        "command_id",
    ),
    Malformed(
        "wrong-content-type",
        lambda s, marker: _raw(s, f"command {marker}".encode(), "text/plain", _task_headers()),
        "untrusted content",
    ),
    Malformed(
        "zero-args",
        lambda s, marker: s.client.send_task(
            "governance.apply_command", args=[], kwargs={"marker": marker}, queue=COMMANDS_QUEUE
        ),
        "exactly one positional argument",
    ),
    Malformed(
        "two-args",
        lambda s, marker: s.send({"command_id": marker}, {"command_id": marker}),
        "exactly one positional argument",
    ),
]


def _text(body: bytes | str) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


def dead_letter_with(broker_url: str, marker: str) -> kombu.Message:
    """Wait for the dead letter whose body carries ``marker`` and take it off the queue."""
    found: list[kombu.Message] = []
    with kombu.Connection(broker_url) as connection:
        queue = DEAD_LETTERS(connection.channel())
        # Declared as the worker declares it (durable, default exchange), in case this test
        # is the first to look before the worker dead-lettered anything.
        queue.declare()

        def taken() -> bool:
            message = queue.get(no_ack=True)
            if message is not None and marker in _text(message.body):
                found.append(message)
            return bool(found)

        wait_until(taken, f"a dead letter carrying {marker}")
    return found[0]


@pytest.mark.parametrize("malformed", MALFORMED, ids=lambda m: m.name)
def test_a_message_that_is_not_a_command_is_dead_lettered_and_the_worker_goes_on(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    broker_url: str,
    malformed: Malformed,
) -> None:
    # Given a message on the command queue that is not a usable command
    marker = new_id("malformed")
    malformed.send(sender, marker)

    # Then it lands in the dead-letter queue, with the reason in a header
    dead = dead_letter_with(broker_url, marker)
    reason = dead.headers.get(DEAD_LETTER_REASON_HEADER)
    assert isinstance(reason, str) and reason
    assert malformed.reason in reason

    # And the worker still answers a valid command afterwards
    request_id = new_id()
    answered = send_and_wait(sender, events, submit(request_id))
    assert answered["event_type"] == "transition.applied"
    assert running_worker.process.poll() is None


# --------------------------------------------------------------------------- faults


def backends_waiting_on_a_lock(db: psycopg.Connection[Any]) -> set[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchall()
    return {int(row[0]) for row in rows}


def test_a_lost_database_connection_is_retried_and_never_answered_as_a_rejection(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    # Given a pending request whose row lock the test holds, and an approve the worker is
    # applying, blocked behind that lock
    request_id = submitted_pending(sender, events)
    approve = command("approve", request_id, 1)
    with row_lock_held(database_url, request_id):
        sender.send(approve)
        wait_until(lambda: bool(backends_waiting_on_a_lock(db)), "the worker to wait on the lock")

        # When the worker's database connection is killed mid-transaction
        (victim,) = backends_waiting_on_a_lock(db)
        db.execute("SELECT pg_terminate_backend(%s)", (victim,))

        # ... the worker comes back on another connection (its retry) before the lock goes
        wait_until(
            lambda: bool(backends_waiting_on_a_lock(db) - {victim}),
            "the worker to retry on a fresh connection",
        )

    # Then the command is applied once, and its only answer is the applied event
    answers = events_of(events, approve["command_id"], at_least=1)
    assert {(e["event_id"], e["event_type"]) for e in answers} == {
        (answers[0]["event_id"], "transition.applied")
    }
    assert request_row(db, request_id).revision == 2
    assert running_worker.process.poll() is None
