"""GovernanceClient end to end: build, validate, send, await, against a real worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from governance.commands import Command, InvalidCommand
from producer import GovernanceClient, OutcomeTimeout
from tests.support.commands import new_id
from tests.support.events import EventListener
from tests.support.identities import Keyring
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration

INTENT = {"operation_name": "raise-limit", "risk_level": "high"}


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(
        broker_url, database_url, timeout=30, signing_key=Keyring()
    ) as governance:
        yield governance


#: Stands for a live request that a parametrised supersede is given, submitted by the test.
SUCCESSOR = "successor"


def submit(client: GovernanceClient, request_id: str, **kwargs: Any) -> Command:
    return client.submit(
        request_id,
        state_id=kwargs.pop("state_id", "cfg-1"),
        state_type="config",
        mutation_type="update",
        intent=INTENT,
        actor=kwargs.pop("actor", "ci"),
        **kwargs,
    )


def applied(client: GovernanceClient, command: Command) -> dict[str, Any]:
    event = client.send_and_wait(command)
    assert event["event_type"] == "transition.applied", event
    return event


def test_submit_and_wait_returns_the_applied_event(client: GovernanceClient) -> None:
    # Given a submit command built by the client
    request_id = new_id()
    command = submit(client, request_id, approval_requirements=[{"approver_id": "alice"}])

    # When it is sent and awaited
    event = client.send_and_wait(command)

    # Then the outcome is the applied event of that very command
    assert event["command_id"] == command.command_id
    assert event["event_type"] == "transition.applied"
    assert (event["to_status"], event["revision"]) == ("pending", 1)
    assert event["request"]["approval_requirements"][0]["approver_id"] == "alice"


def test_move_to_pending_approve_resolve_version_and_mark_executed_each_apply(
    client: GovernanceClient,
) -> None:
    # Given a created request made on state version v1
    request_id = new_id()
    applied(client, submit(client, request_id, expected_state_version="v1"))

    # When it is moved to pending, approved, revalidated on v2 and marked executed
    steps = [
        client.move_to_pending(
            request_id, expected_revision=1, actor="ops", pending_reason="external_check"
        ),
        client.approve(request_id, expected_revision=2, actor="alice", reason="ok"),
        client.resolve_version(
            request_id,
            expected_revision=3,
            actor="ci",
            current_state_version="v2",
            strategy="revalidate_on_latest_state",
        ),
        client.mark_executed(request_id, expected_revision=4, actor="deployer"),
    ]
    events = [applied(client, step) for step in steps]

    # Then each moved the request one revision on, ending executed on v2
    assert [(e["to_status"], e["revision"]) for e in events] == [
        ("pending", 2),
        ("approved", 3),
        ("approved", 4),
        ("executed", 5),
    ]
    assert events[2]["request"]["expected_state_version"] == "v2"


def test_approve_requirement_then_reject_requirement_rejects_the_request(
    client: GovernanceClient,
) -> None:
    # Given a request needing alice (step 1) then bob (step 2)
    request_id = new_id()
    event = applied(
        client,
        submit(
            client,
            request_id,
            approval_requirements=[
                {"approver_id": "alice", "step_order": 1, "approval_id": "a1"},
                {"approver_id": "bob", "step_order": 2, "approval_id": "b2"},
            ],
        ),
    )
    assert event["revision"] == 1

    # When alice grants hers and bob refuses his
    granted = applied(
        client,
        client.approve_requirement(
            request_id, expected_revision=1, actor="alice", approval_id="a1"
        ),
    )
    refused = applied(
        client,
        client.reject_requirement(request_id, expected_revision=2, actor="bob", approval_id="b2"),
    )

    # Then the request stayed pending after the grant and is rejected after the refusal
    assert granted["to_status"] == "pending"
    assert refused["to_status"] == "rejected"
    assert [d["type"] for d in refused["decisions"]] == ["rejected", "rejected"]


@pytest.mark.parametrize(
    ("method", "extra", "final"),
    [
        ("reject", {}, "rejected"),
        ("cancel", {}, "canceled"),
        ("expire", {}, "expired"),
        ("supersede", {"superseding_request_id": SUCCESSOR}, "superseded"),
    ],
)
def test_ending_commands_apply_to_a_pending_request(
    client: GovernanceClient, method: str, extra: dict[str, Any], final: str
) -> None:
    # Given a request pending for manual review
    request_id = new_id()
    applied(client, submit(client, request_id, pending_reason="manual_review"))
    if extra.get("superseding_request_id") == SUCCESSOR:
        # (a supersede names a live request that exists)
        extra = {"superseding_request_id": new_id()}
        applied(client, submit(client, extra["superseding_request_id"]))

    # When the ending command is sent against revision 1
    command = getattr(client, method)(request_id, expected_revision=1, actor="ops", **extra)
    event = client.send_and_wait(command)

    # Then it is applied and the request ends in its final status
    assert (event["event_type"], event["to_status"]) == ("transition.applied", final)


def test_an_invalid_command_raises_before_anything_is_sent(
    client: GovernanceClient, db: psycopg.Connection[Any]
) -> None:
    # Given an approve without the revision it needs
    with pytest.raises(InvalidCommand) as raised:
        # When it is built
        client.build("approve", new_id(), actor="alice")

    # Then validation names the field each time ...
    assert raised.value.field == "expected_revision"
    with pytest.raises(InvalidCommand) as bad_id:
        client.approve("not a valid id!", expected_revision=1, actor="alice")
    assert bad_id.value.field == "request_id"
    with pytest.raises(InvalidCommand) as bad_actor:
        client.send(
            {
                "command_id": "cmd-never-sent",
                "type": "approve",
                "request_id": "r",
                "expected_revision": 1,
                "actor": {},
            }
        )
    assert bad_actor.value.field == "actor.id"
    # ... and the worker, having answered a later command, never heard of the invalid one
    client.send_and_wait(submit(client, new_id()))
    assert db.execute(
        "SELECT count(*) FROM processed_commands WHERE command_id = 'cmd-never-sent'"
    ).fetchone() == (0,)


def test_two_approvals_from_the_same_snapshot_one_applies_one_conflicts(
    client: GovernanceClient,
) -> None:
    # Given a pending request at revision 1
    request_id = new_id()
    applied(client, submit(client, request_id, pending_reason="manual_review"))

    # When alice approves and bob cancels, both against revision 1
    outcomes = client.send_all_and_wait(
        [
            client.approve(request_id, expected_revision=1, actor="alice"),
            client.cancel(request_id, expected_revision=1, actor="bob"),
        ]
    )

    # Then exactly one is applied and the other is a concurrency conflict at revision 2
    kinds = sorted(e["event_type"] for e in outcomes if e is not None)
    assert kinds == ["transition.applied", "transition.rejected"]
    rejected = next(e for e in outcomes if e and e["event_type"] == "transition.rejected")
    assert rejected["rejection"]["code"] == "concurrency_conflict"
    assert rejected["rejection"]["current_revision"] == 2


def test_a_rejection_is_returned_as_the_outcome(client: GovernanceClient) -> None:
    # Given a request that does not exist
    # When it is approved and awaited
    event = client.send_and_wait(client.approve(new_id(), expected_revision=1, actor="alice"))

    # Then the outcome is the not_found rejection
    assert event["rejection"]["code"] == "not_found"


def test_send_and_wait_resends_the_same_command_then_times_out_while_the_row_is_locked(
    client: GovernanceClient, database_url: str, events: EventListener
) -> None:
    # Given a pending request whose row the test holds locked, so no worker can decide it
    request_id = new_id()
    applied(client, submit(client, request_id, pending_reason="manual_review"))
    command = client.approve(request_id, expected_revision=1, actor="alice")
    with psycopg.connect(database_url) as holder:
        holder.execute(
            "SELECT 1 FROM mutation_requests WHERE request_id = %s FOR UPDATE", (request_id,)
        )

        # When the client awaits with two re-sends inside a short budget
        with pytest.raises(OutcomeTimeout) as raised:
            client.send_and_wait(command, timeout=1.5, resend_attempts=2)
        holder.rollback()  # release the lock

    # Then it timed out after three sends of the same command ...
    assert isinstance(raised.value, TimeoutError)
    assert (raised.value.command_id, raised.value.attempts) == (command.command_id, 3)
    # ... which, once the lock is gone, was applied once: every delivery re-published the one
    # recorded outcome (same event_id, revision 2).
    deadline = time.monotonic() + 30
    while len(events.of(command.command_id)) < 3 and time.monotonic() < deadline:
        events.drain(0.2)
    outcomes = events.of(command.command_id)
    assert len(outcomes) == 3
    assert {(e["event_id"], e["event_type"], e["revision"]) for e in outcomes} == {
        (outcomes[0]["event_id"], "transition.applied", 2)
    }


def test_two_hundred_concurrent_send_and_wait_calls_in_one_process(
    client: GovernanceClient,
) -> None:
    # Given 200 threads, each with its own submit, released together
    commands = [submit(client, new_id()) for _ in range(200)]
    barrier = threading.Barrier(len(commands))
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(command: Command) -> None:
        barrier.wait()
        try:
            event = client.send_and_wait(command, timeout=90)
        except BaseException as exc:  # collected and asserted below
            with lock:
                errors.append(exc)
            return
        with lock:
            results[command.command_id] = event

    threads = [threading.Thread(target=run, args=(c,)) for c in commands]
    for thread in threads:
        thread.start()

    # When all of them send and await at once
    for thread in threads:
        thread.join()

    # Then every caller got its own command's applied outcome
    assert errors == []
    assert set(results) == {c.command_id for c in commands}
    assert all(
        e["command_id"] == cid and e["event_type"] == "transition.applied"
        for cid, e in results.items()
    )


def test_send_and_wait_async_returns_the_outcome(client: GovernanceClient) -> None:
    # Given a submit command
    command = submit(client, new_id())

    # When it is awaited from asyncio code
    event = asyncio.run(client.send_and_wait_async(command))

    # Then the outcome is its applied event
    assert (event["command_id"], event["to_status"]) == (command.command_id, "created")


def test_send_returns_the_command_id_once_the_broker_confirmed(
    client: GovernanceClient, events: EventListener
) -> None:
    # Given a submit command
    command = submit(client, new_id())

    # When it is sent without waiting
    command_id = client.send(command)

    # Then the id is the command's and its outcome follows
    assert command_id == command.command_id
    assert events.wait_for([command_id])[command_id]["event_type"] == "transition.applied"
