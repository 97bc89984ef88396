"""Every wait on the broker is bounded: publishes through a memory alarm, on a private node.

During a memory alarm RabbitMQ stops reading every connection that publishes; a publish
whose wait has no bound waits for the whole alarm. Each test holds the alarm until the
publish under test has returned (or the guard below runs out): a publish that waited for
the alarm to clear never returns inside the block, and fails the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producer.client import GovernanceClient
from tests.support.commands import submit
from tests.support.processes import HANG_GUARD
from tests.system.private_services import PrivateRabbitMQ, private_rabbitmq
from worker.outbox import EventPublisher, PublishFailed

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

#: How long a test waits for a publish it holds the alarm for: several times its bound.
GUARD = 30.0


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


def test_an_event_publish_fails_within_its_bound_while_the_broker_blocks(
    rabbit: PrivateRabbitMQ,
) -> None:
    publisher = EventPublisher(rabbit.url, confirm_timeout=2.0)
    try:
        publisher.publish(event(1), "transition.applied.submit")  # connected, not blocked
        # Given a memory alarm on the broker
        with rabbit.memory_alarm():
            # When events are published twice (the second on the connection the first gave up)
            first = outcome_within(lambda: publisher.publish(event(2), "t.a"), GUARD)
            second = outcome_within(lambda: publisher.publish(event(3), "t.a"), GUARD)
            # Then both fail while the alarm still holds: none waits for it to clear
            assert isinstance(first, PublishFailed) and isinstance(second, PublishFailed)
            assert "memory" in rabbit.alarms()
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
