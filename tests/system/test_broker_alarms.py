"""Every wait on the broker is bounded: publishes through a memory alarm, on a private node.

During a memory alarm RabbitMQ stops reading every connection that publishes; a publish
whose wait has no bound waits for the whole alarm. Each test holds the alarm until the
publish under test has returned (or the guard below runs out): a publish that waited for
the alarm to clear never returns inside the block, and fails the test.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu
import pytest

from governance.topology import COMMANDS_QUEUE, WORKER_QUEUES
from producer._amqp import worker_queue
from producer.client import GovernanceClient
from producer.history import check_history
from tests.conftest import purge_queues
from tests.support.commands import submit
from tests.support.processes import HANG_GUARD, BeatProcess
from tests.system.harness import (
    DurableEvents,
    Sender,
    dead_letters,
    start_workers,
    stop_all,
    wait_until,
    workload,
)
from tests.system.private_services import PrivateRabbitMQ, private_rabbitmq
from worker.outbox import EventPublisher, PublishFailed

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

#: How long a test waits for a publish it holds the alarm for: several times its bound.
GUARD = 30.0

#: How long the load test holds its memory alarm; ``GOVERNANCE_TEST_ALARM_SECONDS=200`` runs
#: the long version by hand.
ALARM_SECONDS = float(os.environ.get("GOVERNANCE_TEST_ALARM_SECONDS", "30"))

MODES = {"per-task": {"GOVERNANCE_BATCH_SIZE": "1"}, "batch": {"GOVERNANCE_BATCH_SIZE": "20"}}


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateRabbitMQ]:
    with private_rabbitmq() as node:
        yield node


def outcome_within(action: Callable[[], object], seconds: float) -> BaseException | None:
    """Run ``action`` in a thread; what it raised (None if it returned). Fails the test if it
    is still waiting after ``seconds``."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # reported to the test, not swallowed
            result.append(exc)
        else:
            result.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"still waiting on the broker after {seconds:g}s"
    return result[0]


def event(number: int) -> dict[str, object]:
    return {"event_id": f"alarm-{number}", "sequence": number}


@pytest.mark.parametrize("alarm", ["memory", "disk"])
def test_an_event_publish_fails_within_its_bound_while_the_broker_blocks(
    rabbit: PrivateRabbitMQ, alarm: str
) -> None:
    publisher = EventPublisher(rabbit.url, confirm_timeout=2.0)
    raised = rabbit.memory_alarm() if alarm == "memory" else rabbit.disk_alarm()
    try:
        publisher.publish(event(1), "transition.applied.submit")  # connected, not blocked
        # Given a memory or disk alarm on the broker
        with raised:
            # When events are published twice (the second on the connection the first gave up)
            first = outcome_within(lambda: publisher.publish(event(2), "t.a"), GUARD)
            second = outcome_within(lambda: publisher.publish(event(3), "t.a"), GUARD)
            # Then both fail while the alarm still holds: none waits for it to clear
            assert isinstance(first, PublishFailed) and isinstance(second, PublishFailed)
            assert alarm in rabbit.alarms()
        # And once it clears the publisher takes events again
        assert outcome_within(lambda: publisher.publish(event(4), "t.a"), GUARD) is None
    finally:
        assert outcome_within(publisher.close, GUARD) is None


def test_closing_a_publisher_the_broker_blocks_does_not_wait_for_the_alarm(
    rabbit: PrivateRabbitMQ,
) -> None:
    publisher = EventPublisher(rabbit.url, confirm_timeout=1.0)
    publisher.publish(event(5), "t.a")
    with rabbit.memory_alarm():
        failed = outcome_within(lambda: publisher.publish(event(6), "t.a"), GUARD)
        assert isinstance(failed, PublishFailed)
        # When the process shuts its publisher down during the alarm
        closed = outcome_within(publisher.close, GUARD)
        # Then it returns while the alarm still holds
        assert closed is None and "memory" in rabbit.alarms()


def test_a_client_send_fails_within_its_bound_while_the_broker_blocks(
    rabbit: PrivateRabbitMQ, tmp_path: Path
) -> None:
    client = GovernanceClient(rabbit.url, confirm_timeout=1.0)
    try:
        client.send(submit("alarm-before"))  # connected, not blocked
        with rabbit.memory_alarm():
            # When a command is sent during the alarm
            refused = outcome_within(lambda: client.send(submit("alarm-during")), GUARD * 3)
            # Then the send raises while the alarm still holds
            assert refused is not None and "memory" in rabbit.alarms()
        # And once it clears, the client sends again
        assert outcome_within(lambda: client.send(submit("alarm-after")), GUARD) is None
    finally:
        client.close()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_commands_taken_through_a_memory_alarm_are_each_answered_once_and_none_parked(
    rabbit: PrivateRabbitMQ, database_url: str, tmp_path: Path, mode: str
) -> None:
    declare_worker_queues(rabbit.url)
    purge_queues(rabbit.url)
    events = DurableEvents(rabbit.url)
    sender = Sender(rabbit.url)
    settings = {
        **MODES[mode],
        "GOVERNANCE_RELAY_INTERVAL": "1",
        "GOVERNANCE_RELAY_GRACE_SECONDS": "1",
    }
    workers = []
    beat: BeatProcess | None = None
    started = time.monotonic()
    try:
        # Given 300 commands queued while no worker is up (the queues declared, as workers
        # that ran before left them)
        sender.send(workload(100, f"alarm-{mode}")[1])
        command_ids = sender.command_ids
        assert len(command_ids) == 300
        # When the broker raises a memory alarm, and two workers and beat start under it
        with rabbit.memory_alarm():
            workers = start_workers(database_url, rabbit.url, tmp_path, app="worker", env=settings)
            beat = BeatProcess(database_url, rabbit.url, tmp_path, extra_env=settings)
            # Then the workers take every command while the alarm holds (their events wait
            # for the relay), and are still attached to the queue at its end
            wait_until(
                lambda: rabbit.queue_depth(COMMANDS_QUEUE) == (0, 0),
                ALARM_SECONDS + 60,
                "the command queue drained during the alarm",
                interval=0.5,
            )
            remaining = ALARM_SECONDS - (time.monotonic() - started)
            if remaining > 0:
                time.sleep(remaining)  # the alarm's length is the scenario, not a guess
            assert all(worker.process.poll() is None for worker in workers)
            assert "memory" in rabbit.alarms()
            assert consumers(rabbit, COMMANDS_QUEUE) == len(workers)
        cleared = time.monotonic()
        # And once it clears, every command is answered, none twice and none parked
        found = events.wait_for(command_ids, timeout=60)
        answered_after = time.monotonic() - cleared
        stop_all(workers)
        assert len(found) == 300
        assert dead_letters(rabbit.url) == []
        deadline = time.monotonic() + 30
        while True:
            report = check_history(
                commands=sender.sent,
                events=events.events,
                database_url=database_url,
                dead_letters=dead_letters(rabbit.url),
                broker_url=rabbit.url,
            )
            if report.clean or time.monotonic() > deadline:
                break
            events.drain(0.5)
        report.assert_clean()
        print(
            f"{mode}: alarm held {cleared - started:.1f}s, every command answered "
            f"{answered_after:.1f}s after the clear"
        )
    finally:
        if beat is not None:
            beat.stop()
        stop_all(workers)
        sender.close()
        events.close()


def consumers(rabbit: PrivateRabbitMQ, queue: str) -> int:
    """How many consumers ``queue`` of the node has."""
    for line in rabbit.ctl("list_queues", "name", "consumers").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == queue:
            return int(fields[1])
    return 0


def declare_worker_queues(broker_url: str) -> None:
    """Declare the queues workers declare (the dead-letter queue first: the others
    dead-letter into it)."""
    with kombu.Connection(broker_url) as connection:
        for name in sorted(WORKER_QUEUES, key=lambda n: not n.endswith(".dead")):
            worker_queue(name)(connection.channel()).declare()
