"""Faults a deployment meets, under load: nothing lost, nothing applied twice.

Each test runs real worker processes of the fault app (``tests/system/faults_app.py``: the
production app with hooks at named points, armed per command by a file), puts a few hundred
commands in flight around the one it harms, and ends with the history check
(``producer.history``) over everything it sent and received.

The tests of the command path run in both modes (ids ``[per-task]`` and ``[batch]``): one
Celery task per command in a pool child, and batches applied in one transaction by the
worker's main process (``GOVERNANCE_BATCH_SIZE`` > 1).
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_REASON_HEADER
from producer.deadletters import DeadLetterQueue
from producer.history import replay_outbox
from producer.subscriptions import replay
from tests.conftest import migrated_database, purge_queues
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import without_signature
from tests.support.processes import HANG_GUARD
from tests.support.signed import apply_command
from tests.system.harness import (
    DurableEvents,
    Sender,
    applied_count,
    assert_history_clean,
    start_workers,
    stop_all,
    submitted,
    wait_until,
    waiting_on_lock,
    workers_running,
    workload,
)
from tests.system.private_services import private_postgres, private_rabbitmq

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

LOAD_REQUESTS = 100  # three commands each: 300 in flight around the one under test

#: The workers' environment in each mode of applying commands.
MODES: dict[str, dict[str, str]] = {
    "per-task": {"GOVERNANCE_BATCH_SIZE": "1"},
    "batch": {"GOVERNANCE_BATCH_SIZE": "20"},
}


def arm(fault_dir: Path, point: str, command_id: str) -> Path:
    marker = fault_dir / f"{point}.{command_id}"
    marker.touch()
    return marker


def arrivals(events: EventListener, command_id: str, at_least: int) -> list[dict[str, Any]]:
    """Wait until ``command_id``'s outcome arrived ``at_least`` times; return the arrivals."""

    def enough() -> list[dict[str, Any]] | None:
        events.drain(0.1)
        found = events.of(command_id)
        return found if len(found) >= at_least else None

    result: list[dict[str, Any]] = wait_until(enough, 60, f"{at_least} outcomes of {command_id}")
    return result


@pytest.fixture
def fault_dir(tmp_path: Path) -> Path:
    path = tmp_path / "faults"
    path.mkdir()
    return path


@pytest.fixture
def fault_env(fault_dir: Path) -> dict[str, str]:
    return {"GOVERNANCE_TEST_FAULT_DIR": str(fault_dir)}


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    """The mode the test's workers apply commands in: ``per-task`` or ``batch``."""
    return str(request.param)


@pytest.fixture
def mode_env(mode: str) -> dict[str, str]:
    """The workers' environment for the test's mode, merged into any other it sets."""
    return MODES[mode]


def send_armed_amid_load(
    sender: Sender, events: EventListener, fault_dir: Path, point: str, prefix: str
) -> tuple[dict[str, Any], Path]:
    """Submit a request, arm ``point`` for its approval, and send that approval in the middle
    of a load of other commands; return the approval and the point's marker file."""
    target = new_id(prefix)
    submitted(sender, events, target)
    victim = command("approve", target, 1)
    marker = arm(fault_dir, point, victim["command_id"])
    _, load = workload(LOAD_REQUESTS)
    sender.send([*load[:150], victim, *load[150:]])
    return victim, marker


@pytest.fixture
def sender(broker_url: str) -> Any:
    client = Sender(broker_url)
    yield client
    client.close()


def test_a_child_killed_while_holding_the_row_lock_has_its_command_redelivered_and_applied_once(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    fault_dir: Path,
    fault_env: dict[str, str],
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # (In batch mode the approval is applied in the worker's main process, so the whole worker
    # dies holding the lock, with its batch and the commands it has taken.)
    with workers_running(database_url, broker_url, tmp_path, env={**fault_env, **mode_env}):
        # Given a request whose approval is armed to kill the child holding its row lock,
        # When the approval is sent in the middle of the load
        victim, marker = send_armed_amid_load(sender, events, fault_dir, "holding_lock", "locked")
        events.wait_for(sender.command_ids, timeout=60)

    # Then the child died holding the lock, and the redelivery applied the command once
    assert not marker.exists()
    outcomes = events.of(victim["command_id"])
    assert {e["event_type"] for e in outcomes} == {"transition.applied"}
    assert len({e["event_id"] for e in outcomes}) == 1
    assert applied_count(database_url, victim["command_id"]) == 1
    assert_history_clean(sender, events, database_url, broker_url)


def test_a_child_killed_after_commit_before_the_ack_gets_the_same_event_from_the_ledger(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    fault_dir: Path,
    fault_env: dict[str, str],
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # (In batch mode the whole worker is killed after its batch committed and was published,
    # before any of the batch's messages is acknowledged.)
    with workers_running(database_url, broker_url, tmp_path, env={**fault_env, **mode_env}):
        # Given an approval armed to kill its child after the commit, before the ack,
        # When it is sent in the middle of the load
        victim, marker = send_armed_amid_load(sender, events, fault_dir, "after_commit", "acked")
        events.wait_for(sender.command_ids, timeout=60)
        # Then the unacknowledged message comes back and is answered a second time
        outcomes = arrivals(events, victim["command_id"], at_least=2)

    # ...from the ledger: the very same event, applied once
    assert not marker.exists()
    assert len({e["event_id"] for e in outcomes}) == 1
    assert len({e["sequence"] for e in outcomes}) == 1
    assert outcomes[0]["event_type"] == "transition.applied"
    assert applied_count(database_url, victim["command_id"]) == 1
    assert_history_clean(sender, events, database_url, broker_url)


def test_a_worker_killed_after_commit_before_the_publish_has_its_event_published_by_the_relay(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    fault_dir: Path,
    fault_env: dict[str, str],
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given one worker, and an approval armed to kill the whole worker after its commit
    doomed = start_workers(
        database_url, broker_url, tmp_path, count=1, env={**fault_env, **mode_env}
    )
    # When it is sent in the middle of the load and the worker dies
    victim, marker = send_armed_amid_load(
        sender, events, fault_dir, "before_publish", "unpublished"
    )
    wait_until(lambda: doomed[0].process.poll() is not None, 60, "the worker to be killed")
    stop_all(doomed)
    assert not marker.exists()

    # Then the transition is committed but its event is not published, and no worker runs
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT event_id::text, published_at FROM outbox_events WHERE command_id = %s",
            (victim["command_id"],),
        ).fetchone()
    assert row is not None and row[1] is None
    committed_event_id = row[0]

    # When a relay runs (a worker serving only the maintenance queue; without the mode's
    # environment, since in batch mode the main process would consume the commands too)
    with workers_running(
        database_url,
        broker_url,
        tmp_path,
        count=1,
        app="worker",
        env={"GOVERNANCE_RELAY_GRACE_SECONDS": "0.01"},
        extra_args=("-Q", "governance.maintenance"),
    ):
        sender.app.send_task("governance.relay_outbox", queue="governance.maintenance")
        relayed = arrivals(events, victim["command_id"], at_least=1)
    # Then the relay published the committed event
    assert [e["event_id"] for e in relayed] == [committed_event_id]

    # And when workers come back, the redelivered command is answered from the ledger
    with workers_running(database_url, broker_url, tmp_path, app="worker", env=mode_env):
        events.wait_for(sender.command_ids, timeout=60)
        outcomes = arrivals(events, victim["command_id"], at_least=2)
    assert {e["event_id"] for e in outcomes} == {committed_event_id}
    assert applied_count(database_url, victim["command_id"]) == 1
    assert_history_clean(sender, events, database_url, broker_url)


def test_terminated_database_connections_are_retried_and_nothing_is_lost(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    with workers_running(database_url, broker_url, tmp_path, app="worker", env=mode_env):
        # Given hundreds of commands in flight
        _, load = workload(150)
        sender.send(load[:200])

        # When every worker connection to the test database is terminated, twice, mid-stream
        with psycopg.connect(database_url, autocommit=True) as admin:
            for batch in (load[200:350], load[350:]):
                wanted = len(events.events) + 50
                wait_until(lambda n=wanted: outcomes_beyond(events, n), 30, "outcomes to flow")
                terminated = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                assert terminated is not None and terminated[0] > 0
                sender.send(batch)

        # Then every command still gets its one outcome
        events.wait_for(sender.command_ids, timeout=90)

    assert_history_clean(sender, events, database_url, broker_url)


def test_the_same_command_delivered_ten_times_at_once_is_applied_once_with_ten_identical_outcomes(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    mode: str,
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # The deliveries wait on the test's lock for as long as the test holds it: with the
    # default lock timeout a slow machine would time them out and requeue them behind the
    # load before four are ever blocked at once.
    env = {**mode_env, "GOVERNANCE_DB_LOCK_TIMEOUT": "0"}
    with workers_running(database_url, broker_url, tmp_path, app="worker", env=env):
        target = new_id("tenfold")
        submitted(sender, events, target)
        approval = command("approve", target, 1)
        _, load = workload(LOAD_REQUESTS)

        # Given the request's row locked by the test, and ten deliveries of one approval
        with psycopg.connect(database_url) as blocker:
            blocker.execute(
                "SELECT 1 FROM mutation_requests WHERE request_id = %s FOR UPDATE", (target,)
            )
            sender.send([approval] * 10)
            # ...four of them blocked on the lock at once, one in each worker child (in batch
            # mode at least one: a batch worker applies one batch at a time in its main
            # process, its children take no commands, so each of the two workers has at most
            # one transaction waiting, and the other deliveries wait in or behind its batch)
            blocked = 4 if mode == "per-task" else 1
            wait_until(
                lambda: waiting_on_lock(database_url) >= blocked,
                30,
                f"{blocked} blocked deliveries",
            )
            sender.send(load)
            # When the lock is released
            blocker.rollback()

        events.wait_for(sender.command_ids, timeout=60)
        outcomes = arrivals(events, approval["command_id"], at_least=10)

    # Then one apply, and ten outcomes that are the same event
    assert len(outcomes) == 10
    assert len({e["event_id"] for e in outcomes}) == 1
    assert outcomes[0]["event_type"] == "transition.applied"
    assert applied_count(database_url, approval["command_id"]) == 1
    assert_history_clean(sender, events, database_url, broker_url)


def outcomes_beyond(events: EventListener, count: int) -> bool:
    events.drain(0.1)
    return len(events.events) >= count


def _process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_worker_paused_while_holding_the_lock_and_resumed_still_applies_once(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    fault_dir: Path,
    fault_env: dict[str, str],
    mode: str,
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # The holder is resumed in time: the server's idle-in-transaction limit (15 s by default,
    # which would end the frozen transaction and let the rival win) is set beyond the freeze.
    env = {**fault_env, **mode_env, "GOVERNANCE_DB_IDLE_IN_TRANSACTION_TIMEOUT": "120"}
    # (In batch mode the second worker starts once the first is frozen: see below.)
    first = 2 if mode == "per-task" else 1
    with workers_running(database_url, broker_url, tmp_path, count=first, env=env) as workers:
        target = new_id("paused")
        submitted(sender, events, target)
        victim = command("approve", target, 1)
        rival = command("cancel", target, 1)
        arm(fault_dir, "pause_holding_lock", victim["command_id"])
        _, load = workload(LOAD_REQUESTS)

        # Given the child applying the approval frozen (SIGSTOP) while it holds the row lock
        sender.send([victim])
        paused = fault_dir / f"paused.{victim['command_id']}"
        wait_until(paused.exists, 30, "the child to pause")
        pid = int(wait_until(paused.read_text, 5, "the pid"))
        wait_until(lambda: _process_state(pid) == "T", 10, "the child to be stopped")
        fillers: list[dict[str, Any]] = []
        if mode == "batch":
            # In batch mode the frozen process is the worker's main process, which consumes
            # the commands: the broker goes on handing it commands up to its prefetch (twice
            # the batch size), and those would wait with it, the rival among them. So its
            # prefetch is filled first, with submits of their own, and only then does the
            # second worker start, to take the rival and the load.
            prefetch = 2 * int(MODES["batch"]["GOVERNANCE_BATCH_SIZE"])
            fillers = [
                submit(new_id("filler"), initial_status="created") for _ in range(prefetch - 1)
            ]
            sender.send(fillers)
            wait_until(lambda: ready_commands(broker_url) == 0, 30, "the prefetch to fill")
            # The rival's wait for the lock then holds up that worker's main process, and the
            # load it has taken, for the lock timeout, retried in process for the
            # infrastructure retry budget (5 s each by default), until the rival goes back to
            # the queue, to come back and wait again: short ones let the load flow between the
            # rival's waits.
            rival_env = {
                **env,
                "GOVERNANCE_DB_LOCK_TIMEOUT": "1",
                "GOVERNANCE_INFRASTRUCTURE_RETRY_SECONDS": "1",
            }
            workers.extend(
                start_workers(database_url, broker_url, tmp_path, count=1, env=rival_env)
            )

        # When a rival command on the same revision waits for that lock, and the load flows
        sender.send([rival, *load])
        wait_until(lambda: waiting_on_lock(database_url) >= 1, 30, "the rival to block")
        events.wait_for([p["command_id"] for p in load], timeout=60)
        # ...and the frozen child is resumed
        os.kill(pid, signal.SIGCONT)
        outcome = events.wait_for([victim["command_id"], rival["command_id"]], timeout=60)
        events.wait_for([p["command_id"] for p in fillers], timeout=60)

    # Then the approval was applied once and the rival lost to it
    assert outcome[victim["command_id"]]["event_type"] == "transition.applied"
    assert outcome[rival["command_id"]]["rejection"]["code"] == "concurrency_conflict"
    assert outcome[rival["command_id"]]["rejection"]["current_revision"] == 2
    assert applied_count(database_url, victim["command_id"]) == 1
    assert_history_clean(sender, events, database_url, broker_url)


def ready_commands(broker_url: str) -> int:
    """How many messages wait in ``governance.commands``, not yet handed to a consumer."""
    with kombu.Connection(broker_url) as conn:
        _, ready, _ = conn.default_channel.queue_declare(COMMANDS_QUEUE, passive=True)
    return int(ready)


def _due_pending(request_id: str, expires_at: str) -> dict[str, Any]:
    return {
        "command_id": new_id("cmd"),
        "type": "submit",
        "request_id": request_id,
        "actor": {"id": "submitter"},
        "args": {
            "state_id": "state-1",
            "state_type": "config",
            "mutation_type": "update",
            "intent": {"operation_name": "update-config", "risk_level": "medium"},
            "initial_status": "pending",
            "pending_reason": "schedule",
            "expires_at": expires_at,
        },
    }


def test_two_expiry_sweepers_with_one_crashing_mid_batch_expire_each_due_request_once(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    fault_dir: Path,
    fault_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {
        **fault_env,
        "GOVERNANCE_EXPIRY_BATCH_SIZE": "60",
        "GOVERNANCE_TEST_EXPIRE_KILL_AFTER": "20",
    }
    with workers_running(database_url, broker_url, tmp_path, env=env):
        # Given 300 pending requests that expire in two seconds by the database clock
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        deadline = row[0] + timedelta(seconds=2)
        request_ids = [new_id("due") for _ in range(300)]
        sender.send(_due_pending(r, deadline.isoformat()) for r in request_ids)
        events.wait_for(sender.command_ids, timeout=60)
        with psycopg.connect(database_url, autocommit=True) as conn:

            def due() -> int:
                found = conn.execute(
                    "SELECT count(*) FROM mutation_requests "
                    "WHERE request_id = ANY(%s) AND status = 'pending' AND expires_at <= now()",
                    (request_ids,),
                ).fetchone()
                assert found is not None
                return int(found[0])

            wait_until(lambda: due() == len(request_ids), 30, "the requests to fall due")

            # When sweeps run in both workers at once, and one sweeper dies mid-batch
            marker = arm(fault_dir, "expire_midbatch", "any")

            def swept() -> bool:
                for _ in range(4):
                    sender.app.send_task("governance.expire_due", queue="governance.maintenance")
                return due() == 0

            wait_until(swept, 60, "every due request to be expired", interval=0.3)
        assert not marker.exists()
        expiries: dict[str, list[dict[str, Any]]] = {r: [] for r in request_ids}

        def all_expiries_arrived() -> bool:
            events.drain(0.2)
            for found in expiries.values():
                found.clear()
            for event in events.events:
                found = expiries.get(event["request_id"])
                if event.get("command_type") == "expire" and found is not None:
                    found.append(event)
            return all(expiries.values())

        wait_until(all_expiries_arrived, 30, "the expiry events")

    # Then each due request was expired exactly once, at revision 2
    for request_id, found in expiries.items():
        assert len({e["event_id"] for e in found}) == 1, request_id
        assert found[0]["event_type"] == "transition.applied"
        assert found[0]["revision"] == 2
    with psycopg.connect(database_url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT count(*) FROM request_decisions "
            "WHERE request_id = ANY(%s) AND category = 'lifecycle' AND type = 'expired'",
            (request_ids,),
        ).fetchone()
    assert counts is not None and counts[0] == len(request_ids)
    assert_history_clean(sender, events, database_url, broker_url)


def test_a_poison_command_is_dead_lettered_after_bounded_redeliveries_and_others_are_unaffected(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    mode_env: dict[str, str],
    tmp_path: Path,
) -> None:
    purge_queues(broker_url)
    # (In batch mode a poison command fails alone inside its batch, and its retries run on the
    # retry queue through the task path, with the same bound.)
    env = {"GOVERNANCE_POISON_RETRY_LIMIT": "2", **mode_env}
    with workers_running(database_url, broker_url, tmp_path, env=env):
        # Given three commands whose handler raises every time, among the load
        targets = [new_id("poisoned") for _ in range(3)]
        for target in targets:
            submitted(sender, events, target)
        poison = [command("approve", t, 1, command_id=new_id("poison")) for t in targets]
        _, load = workload(LOAD_REQUESTS)

        # When they are sent
        sender.send([*load[:150], *poison, *load[150:]])

        # Then the rest of the load is answered
        events.wait_for([p["command_id"] for p in load], timeout=60)
        # ...and the poison ends in the dead-letter queue after 1 + 2 attempts
        poison_ids = {p["command_id"] for p in poison}

        def poison_dead_lettered() -> list[Any] | None:
            found = [d for d in DeadLetterQueue(broker_url).list() if d.key in poison_ids]
            return found if len(found) == len(poison_ids) else None

        letters = wait_until(poison_dead_lettered, 60, "the poison dead-lettered", interval=0.3)

    for letter in letters:
        assert "failed 3 times" in letter.headers[DEAD_LETTER_REASON_HEADER]
        assert letter.headers["x-governance-retries"] == 2
        sent = next(p for p in poison if p["command_id"] == letter.key)
        assert without_signature(letter.command) == without_signature(sent)
    # ...never applied, and the requests still at revision 1
    for p in poison:
        assert applied_count(database_url, p["command_id"]) == 0
        assert events.of(p["command_id"]) == []
    assert_history_clean(sender, events, database_url, broker_url, with_dead_letters=True)
    purge_queues(broker_url)


def test_a_late_subscriber_replays_every_transition_in_request_order_despite_out_of_order_commits(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    env = {"GOVERNANCE_RELAY_GRACE_SECONDS": "0.01"}
    with (
        psycopg.connect(database_url, autocommit=True) as reader,
        workers_running(database_url, broker_url, tmp_path, app="worker", env=env),
    ):
        # Given a subscriber that goes offline at the log's current end
        row = reader.execute("SELECT coalesce(max(sequence), 0) FROM outbox_events").fetchone()
        assert row is not None
        offline_from = int(row[0])

        # When 1,000 transitions happen (250 requests, four applied commands each)
        request_ids = [new_id("replay") for _ in range(250)]
        waves = [
            [submit(r, initial_status="created") for r in request_ids],
            [
                command("move_to_pending", r, 1, args={"pending_reason": "manual_review"})
                for r in request_ids
            ],
            [command("approve", r, 2) for r in request_ids],
            [command("mark_executed", r, 3) for r in request_ids],
        ]
        for wave in waves:
            sender.send(wave)
            events.wait_for([p["command_id"] for p in wave], timeout=60)

        # ...and two transactions commit out of sequence order: T1 writes first (the lower
        # sequence) but commits after T2
        late = [new_id("late") for _ in range(2)]
        for request_id in late:
            submitted(sender, events, request_id)
        early_cmd, late_cmd = (command("approve", r, 1) for r in late)
        with (
            psycopg.connect(database_url) as t1,
            psycopg.connect(database_url, autocommit=True) as t2,
        ):
            t1.execute("SELECT 1")  # open T1, so the apply runs inside it
            first = apply_command(t1, early_cmd)
            second = apply_command(t2, late_cmd)
            assert first.sequence < second.sequence
            # Then a replay while T1 is open gives T2's committed event but not T1's, and
            # keeps a position that does not step over T1's
            during = replay_outbox(reader, offline_from)
            assert during.caught_up
            assert second.sequence in {e["sequence"] for e in during.events}
            assert first.sequence not in {e["sequence"] for e in during.events}
            # ...and a subscriber of the producer library comes back now, its log read
            # starting while T1 is still open
            subscriber = replay(database_url, broker_url, offline_from)
            resumed = [subscriber.get(timeout=10)]
            t1.commit()
        # ...and resumed from that position once T1 committed, it gives T1's event, once
        after_commit = replay_outbox(reader, during.position)
        assert [
            e["sequence"]
            for e in after_commit.events
            if e["sequence"] in (first.sequence, second.sequence)
        ] == [first.sequence]
        replayed = during.events + after_commit.events
        # (the two hand-made events reach the broker through the relay, like any orphan)
        sender.sent += [early_cmd, late_cmd]
        sender.app.send_task("governance.relay_outbox", queue="governance.maintenance")
        events.wait_for([early_cmd["command_id"], late_cmd["command_id"]], timeout=30)
        try:
            expected = {e["event_id"] for e in replayed}

            def resumed_everything() -> bool:
                event = subscriber.get(timeout=0.5)
                if event is not None:
                    resumed.append(event)
                return expected <= {e["event_id"] for e in resumed if e is not None}

            wait_until(resumed_everything, 60, "the subscriber to catch up", interval=0)
        finally:
            subscriber.close()

    # Then the replay holds all 1,000 transitions and both late ones, each request's in
    # revision order, exactly the events that were published live
    ours = set(request_ids) | set(late)
    applied = [
        e for e in replayed if e["event_type"] == "transition.applied" and e["request_id"] in ours
    ]
    assert len(applied) == 1000 + 4
    revisions: dict[str, list[int]] = {}
    for event in applied:
        revisions.setdefault(event["request_id"], []).append(event["revision"])
    assert all(revisions[r] == [1, 2, 3, 4] for r in request_ids)
    assert all(revisions[r] == [1, 2] for r in late)
    live = {
        e["event_id"]
        for e in events.events
        if e["event_type"] == "transition.applied" and e["request_id"] in ours
    }
    assert {e["event_id"] for e in applied} == live
    # And the library's replay-then-live gave the subscriber every one of them, each request's
    # in revision order
    first_arrivals: dict[str, dict[str, Any]] = {}
    for event in resumed:
        if event is not None:
            first_arrivals.setdefault(event["event_id"], event)
    resumed_revisions: dict[str, list[int]] = {}
    for event in first_arrivals.values():
        if event["event_type"] == "transition.applied" and event["request_id"] in ours:
            resumed_revisions.setdefault(event["request_id"], []).append(event["revision"])
    assert resumed_revisions == revisions
    assert_history_clean(sender, events, database_url, broker_url)


def test_a_rabbitmq_restart_mid_stream_loses_no_confirmed_command(
    database_url: str, mode_env: dict[str, str], tmp_path: Path
) -> None:
    with private_rabbitmq() as rabbit:
        listener = DurableEvents(rabbit.url)
        sender = Sender(rabbit.url)
        relay_env = {"GOVERNANCE_RELAY_INTERVAL": "1", "GOVERNANCE_RELAY_GRACE_SECONDS": "0.5"}
        beat = ("-B", "--schedule", str(tmp_path / "beat-schedule"))
        workers = [
            *start_workers(database_url, rabbit.url, tmp_path, count=1, app="worker", env=mode_env),
            *start_workers(
                database_url,
                rabbit.url,
                tmp_path,
                count=1,
                app="worker",
                env={**relay_env, **mode_env},
                extra_args=beat,
            ),
        ]
        try:
            # Given a producer with confirms sending 450 commands in the background
            _, load = workload(150)
            producer = threading.Thread(target=sender.send_resiliently, args=(load,))
            producer.start()
            wait_until(lambda: listener.drain(0.1) or len(listener.events) >= 60, 60, "a flow")

            # When the broker restarts mid-stream
            answered_before = len({e["command_id"] for e in listener.events})
            rabbit.restart()
            producer.join(180)
            assert not producer.is_alive()

            # Then every command sent is answered once the workers have reconnected
            listener.wait_for(sender.command_ids, timeout=120)
            # (and copies a re-sending producer left behind are consumed too, before the
            # workers stop, so the history check sees what the service left, not the race)
            wait_until(
                lambda: rabbit.queue_depth(COMMANDS_QUEUE) == (0, 0), 60, "the queue drained"
            )
        finally:
            stop_all(workers)
        assert answered_before < len(load) == len(sender.sent)
        assert_history_clean(sender, listener, database_url, rabbit.url)  # type: ignore[arg-type]
        listener.close()
        sender.close()


def test_a_postgresql_restart_mid_stream_has_in_flight_work_retried_and_nothing_lost(
    tmp_path: Path,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    mode_env: dict[str, str],
) -> None:
    with private_postgres() as postgres, migrated_database(postgres.url) as database_url:
        with workers_running(database_url, broker_url, tmp_path, app="worker", env=mode_env):
            # Given hundreds of commands in flight
            _, load = workload(150)
            sender.send(load[:250])
            wanted = len(events.events) + 60
            wait_until(lambda: outcomes_beyond(events, wanted), 30, "outcomes to flow")

            # When the database server restarts mid-stream (every connection cut)
            answered_before = len({e["command_id"] for e in events.events})
            postgres.restart()
            sender.send(load[250:])

            # Then every command still gets its one outcome
            events.wait_for(sender.command_ids, timeout=90)
        assert answered_before < len(sender.sent)
        assert_history_clean(sender, events, database_url, broker_url)
