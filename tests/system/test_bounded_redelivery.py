"""Redelivery is bounded for every failure a message causes itself, in per-task and batch mode:
one that kills its worker every time, and one the database refuses every time, end parked in
the dead-letter queue with the reason, while the load around them is answered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from governance.topology import DEAD_LETTER_REASON_HEADER
from producer.deadletters import DeadLetter, DeadLetterQueue
from tests.conftest import purge_queues
from tests.support.commands import command, new_id
from tests.support.events import EventListener
from tests.support.faults import KILLER_PREFIX, LIMIT_PREFIX
from tests.support.identities import without_signature
from tests.support.processes import HANG_GUARD, WorkerProcess
from tests.system.harness import (
    FAULTS_APP,
    Sender,
    applied_count,
    assert_history_clean,
    stop_all,
    submitted,
    wait_until,
    workers_running,
    workload,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

MODES = {"per-task": {"GOVERNANCE_BATCH_SIZE": "1"}, "batch": {"GOVERNANCE_BATCH_SIZE": "20"}}


@pytest.fixture
def sender(broker_url: str) -> Any:
    client = Sender(broker_url)
    yield client
    client.close()


def parked(broker_url: str, command_id: str) -> DeadLetter | None:
    return next((d for d in DeadLetterQueue(broker_url).list() if d.key == command_id), None)


def doomed_command(prefix: str) -> dict[str, Any]:
    """An approval whose command_id makes the fault app fail it every time."""
    return command("approve", new_id("doomed"), 1, command_id=new_id(prefix.rstrip("-")))


def parked_amid_load(
    doomed: dict[str, Any], sender: Sender, events: EventListener, broker_url: str
) -> DeadLetter:
    """Send ``doomed`` (its request submitted first) amid a load; wait until the load is
    answered and ``doomed`` is parked; return its dead letter."""
    submitted(sender, events, doomed["request_id"])
    _, load = workload(30)
    sender.send([*load[:45], doomed, *load[45:]])
    events.wait_for([p["command_id"] for p in load], timeout=90)
    letter: DeadLetter = wait_until(
        lambda: parked(broker_url, doomed["command_id"]), 90, "the command parked", 0.3
    )
    return letter


def assert_parked_and_clean(
    letter: DeadLetter,
    doomed: dict[str, Any],
    sender: Sender,
    events: EventListener,
    database_url: str,
    broker_url: str,
) -> None:
    assert without_signature(letter.command) == without_signature(doomed)
    assert applied_count(database_url, doomed["command_id"]) == 0
    assert_history_clean(sender, events, database_url, broker_url, with_dead_letters=True)
    purge_queues(broker_url)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_command_the_database_refuses_every_time_is_parked_not_requeued_forever(
    mode: str,
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    purge_queues(broker_url)
    env = {"GOVERNANCE_POISON_RETRY_LIMIT": "1", **MODES[mode]}
    # Given a command whose transaction exceeds a PostgreSQL program limit (54000, which the
    # driver reports as an "operational" error)
    doomed = doomed_command(LIMIT_PREFIX)
    with workers_running(database_url, broker_url, tmp_path, count=1, env=env):
        # When it is sent amid a load
        letter = parked_amid_load(doomed, sender, events, broker_url)
    # Then it is parked after 1 + 1 attempts, with the database's reason, and nothing applied
    reason = str(letter.headers[DEAD_LETTER_REASON_HEADER])
    assert "failed 2 times" in reason and "54000" in reason
    assert_parked_and_clean(letter, doomed, sender, events, database_url, broker_url)


def test_a_command_that_kills_its_worker_every_time_is_parked_after_bounded_deliveries(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    purge_queues(broker_url)
    env = {"GOVERNANCE_LOST_DELIVERY_LIMIT": "2", **MODES["per-task"]}
    # Given a command that makes the per-task child applying it die, holding the row lock
    doomed = doomed_command(KILLER_PREFIX)
    with workers_running(database_url, broker_url, tmp_path, count=1, env=env):
        # When it is sent amid a load
        letter = parked_amid_load(doomed, sender, events, broker_url)
    # Then it is parked once 3 of its deliveries were lost, and the rest was answered
    reason = str(letter.headers[DEAD_LETTER_REASON_HEADER])
    assert "kills its worker" in reason and "last 3" in reason
    assert_parked_and_clean(letter, doomed, sender, events, database_url, broker_url)


def test_in_batch_mode_a_killer_is_parked_alone_and_its_batch_is_applied(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    purge_queues(broker_url)
    env = {"GOVERNANCE_LOST_DELIVERY_LIMIT": "1", **MODES["batch"]}
    killer = doomed_command(KILLER_PREFIX)
    _, load = workload(30)
    with workers_running(database_url, broker_url, tmp_path, count=1, env=env):
        submitted(sender, events, killer["request_id"])
    # Given a killer amid a load, sent to a batch worker (which applies batches in its main
    # process, so the killer takes the whole worker down with its batch)
    sender.send([*load[:45], killer, *load[45:]])
    workers: list[WorkerProcess] = []
    try:
        # When the worker is restarted each time it dies, as a supervisor would
        deadline = time.monotonic() + 120
        while parked(broker_url, killer["command_id"]) is None:
            assert time.monotonic() < deadline, "the killer was never parked"
            if not workers or workers[-1].process.poll() is not None:
                # (not awaited ready: it may die before it says so)
                workers.append(
                    WorkerProcess(
                        database_url,
                        broker_url,
                        app=FAULTS_APP,
                        log_path=tmp_path / f"batch-worker-{len(workers)}.log",
                        extra_env=env,
                    )
                )
            time.sleep(0.3)
        # Then the rest of its batch is applied, and the killer parked after 2 lost deliveries
        events.wait_for([p["command_id"] for p in load], timeout=60)
    finally:
        stop_all(workers)
    letter = parked(broker_url, killer["command_id"])
    assert letter is not None
    reason = str(letter.headers[DEAD_LETTER_REASON_HEADER])
    assert "kills its worker" in reason and "last 2" in reason
    assert_parked_and_clean(letter, killer, sender, events, database_url, broker_url)
