"""Quorum queues by default: what the worker declares, what a plain Celery client needs to
send to them, how a worker meets a classic queue left from before, the broker's own delivery
limit as the last resort, and bounded durable subscriptions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kombu
import pytest
from amqp.exceptions import NotFound, PreconditionFailed
from celery import Celery

from governance.topology import (
    APPLY_COMMAND_TASK,
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    MAINTENANCE_QUEUE,
    RETRY_QUEUE,
    SUBSCRIPTION_QUEUE_PREFIX,
    delivery_limit_from,
    queue_arguments,
    queue_type_from,
    subscription_arguments,
)
from producer.deadletters import DeadLetterQueue
from producer.signing import sign_event
from producer.subscriptions import Subscription, delete_subscription
from tests.deployment.test_readme import marked_block
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.faults import KILLER_PREFIX
from tests.support.identities import sign, trusted_worker_keys, worker_key
from tests.support.processes import WorkerProcess
from tests.support.services import spare_vhost
from tests.system.harness import FAULTS_APP, wait_until
from worker.outbox import EventPublisher

pytestmark = pytest.mark.timeout(120)


def declare(broker_url: str, name: str, arguments: dict[str, object] | None) -> None:
    """Declare ``name`` as a work queue with ``arguments``; raises what the broker refuses."""
    with kombu.Connection(broker_url) as connection:
        exchange = kombu.Exchange(name, type="direct")
        kombu.Queue(name, exchange, name, queue_arguments=arguments)(connection.channel()).declare()


def plain_celery_client(broker_url: str, **settings: Any) -> Celery:
    client = Celery(broker=broker_url, set_as_current=False)
    client.conf.update(broker_transport_options={"confirm_publish": True}, **settings)
    return client


#: The one setting a plain Celery client needs for the quorum queue (see the README).
SEND_WITHOUT_DECLARING = {"task_queues": [kombu.Queue(COMMANDS_QUEUE, no_declare=True)]}


def test_classic_work_queues_are_declared_as_a_plain_celery_client_declares_them() -> None:
    assert queue_arguments(COMMANDS_QUEUE, "classic") is None
    assert queue_arguments(DEAD_LETTER_QUEUE, "classic") is None


def test_quorum_work_queues_dead_letter_at_least_once_into_the_dead_letter_queue() -> None:
    assert queue_arguments(RETRY_QUEUE, "quorum", delivery_limit=7) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def test_an_unknown_queue_type_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="GOVERNANCE_QUEUE_TYPE='lazy' must be one of"):
        queue_type_from({"GOVERNANCE_QUEUE_TYPE": "lazy"})
    with pytest.raises(ValueError, match="GOVERNANCE_DELIVERY_LIMIT='0' must be at least 1"):
        delivery_limit_from({"GOVERNANCE_DELIVERY_LIMIT": "0"})


def test_durable_subscription_bounds_become_length_and_ttl_arguments() -> None:
    assert subscription_arguments("quorum", max_length=10, max_age_seconds=1.5) == {
        "x-queue-type": "quorum",
        "x-max-length": 10,
        "x-message-ttl": 1500,
    }
    assert subscription_arguments("classic", max_length=None, max_age_seconds=None) == {}


@pytest.mark.parametrize("name", [COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE])
def test_the_worker_declares_its_work_queues_as_quorum_queues_that_dead_letter(
    name: str, broker_url: str, running_worker: WorkerProcess
) -> None:
    # Given a worker started with the default settings
    # Then its queue is redeclared alike with the quorum arguments, and refused as classic
    declare(broker_url, name, queue_arguments(name))
    with pytest.raises(PreconditionFailed, match="inequivalent arg"):
        declare(broker_url, name, None)


def test_the_dead_letter_queue_is_a_quorum_queue_without_a_delivery_limit(
    broker_url: str, running_worker: WorkerProcess
) -> None:
    assert queue_arguments(DEAD_LETTER_QUEUE) == {"x-queue-type": "quorum"}
    with kombu.Connection(broker_url) as connection:
        queue = kombu.Queue(
            DEAD_LETTER_QUEUE,
            kombu.Exchange(""),
            DEAD_LETTER_QUEUE,
            queue_arguments={"x-queue-type": "quorum"},
        )
        queue(connection.channel()).declare()
        with pytest.raises(PreconditionFailed, match="x-queue-type"):
            kombu.Queue(DEAD_LETTER_QUEUE, kombu.Exchange(""), DEAD_LETTER_QUEUE)(
                connection.channel()
            ).declare()


def test_the_readme_recipe_for_a_plain_celery_client_sends_to_the_quorum_queue(
    broker_url: str, running_worker: WorkerProcess, events: EventListener
) -> None:
    # Given the README's recipe for any Celery client, exactly as written
    recipe = marked_block("plain-celery-client")
    payload = sign(submit(new_id("plain")))
    scope: dict[str, Any] = {"BROKER_URL": broker_url, "command": payload}
    try:
        # When it runs, with the test broker's URL and a command
        exec(compile(recipe, "README.md", "exec"), scope)
        # Then the command's outcome event arrives
        outcome = events.wait_for([payload["command_id"]])[payload["command_id"]]
    finally:
        scope["celery_app"].close()
    assert outcome["event_type"] == "transition.applied"


def test_a_plain_celery_client_without_that_setting_is_refused_by_the_broker(
    broker_url: str,
) -> None:
    with spare_vhost(broker_url) as url:
        # Given governance.commands as the worker declares it
        declare(url, COMMANDS_QUEUE, queue_arguments(COMMANDS_QUEUE))
        # Then a client that declares the queue it sends to, with default arguments, is refused
        client = plain_celery_client(url)
        try:
            with pytest.raises(PreconditionFailed, match="inequivalent arg"):
                client.send_task(APPLY_COMMAND_TASK, args=[submit(new_id())], queue=COMMANDS_QUEUE)
        finally:
            client.close()


def test_a_worker_meeting_a_classic_command_queue_stops_with_one_line_naming_the_setting(
    broker_url: str, database_url: str, tmp_path: Path
) -> None:
    with spare_vhost(broker_url) as url:
        # Given a broker holding governance.commands as a classic queue (from before)
        declare(url, COMMANDS_QUEUE, None)
        # When a worker with the default (quorum) settings starts
        log_path = tmp_path / "worker.log"
        worker = WorkerProcess(database_url, url, log_path=log_path)
        try:
            code = worker.process.wait(60)
        finally:
            worker.kill()
        # Then it exits with one line naming the setting and the way out
        assert code != 0
        lines = [
            line
            for line in log_path.read_text().splitlines()
            if "exists on the broker with other arguments" in line
        ]
        assert lines, log_path.read_text()[-2000:]
        assert "GOVERNANCE_QUEUE_TYPE=classic" in lines[0]
        assert "drain it, delete it" in lines[0]


def test_a_worker_set_to_classic_runs_on_a_classic_command_queue(
    broker_url: str, database_url: str, tmp_path: Path
) -> None:
    with spare_vhost(broker_url) as url:
        declare(url, COMMANDS_QUEUE, None)
        worker = WorkerProcess(
            database_url,
            url,
            log_path=tmp_path / "worker.log",
            extra_env={"GOVERNANCE_QUEUE_TYPE": "classic"},
        )
        events = EventListener(url)
        client = plain_celery_client(url)
        try:
            worker.wait_ready()
            payload = sign(submit(new_id("classic")))
            # A client that redeclares with default arguments is served as before
            client.send_task(APPLY_COMMAND_TASK, args=[payload], queue=COMMANDS_QUEUE)
            outcome = events.wait_for([payload["command_id"]])[payload["command_id"]]
        finally:
            client.close()
            events.close()
            worker.stop()
    assert outcome["event_type"] == "transition.applied"


def test_a_message_that_kills_its_worker_every_time_is_dead_lettered_by_the_broker(
    broker_url: str, database_url: str, tmp_path: Path
) -> None:
    # Given a per-task worker (its pool child dies, its main process lives on) whose own
    # count of lost deliveries would not stop the message in time, and a broker delivery
    # limit of 2
    env = {
        "GOVERNANCE_LOST_DELIVERY_LIMIT": "1000",
        "GOVERNANCE_DELIVERY_LIMIT": "2",
        "GOVERNANCE_BATCH_SIZE": "1",
    }
    doomed = sign(command("approve", new_id("doomed"), 1, command_id=new_id("killer")))
    assert doomed["command_id"].startswith(KILLER_PREFIX)
    with spare_vhost(broker_url) as url:
        worker = WorkerProcess(
            database_url,
            url,
            app=FAULTS_APP,
            concurrency=1,
            log_path=tmp_path / "worker.log",
            extra_env={**env, "GOVERNANCE_QUEUE_TYPE": "quorum"},
        )
        client = plain_celery_client(url, **SEND_WITHOUT_DECLARING)
        try:
            worker.wait_ready()
            # When a command whose delivery kills the worker process each time is sent
            client.send_task(APPLY_COMMAND_TASK, args=[doomed], queue=COMMANDS_QUEUE)
            # Then the broker parks it in the dead-letter queue, with its reason
            (letter,) = wait_until(
                lambda: DeadLetterQueue(url).list(), 90, "the broker to dead-letter it", 0.5
            )
        finally:
            client.close()
            worker.stop()
    assert letter.headers["x-first-death-reason"] == "delivery_limit"
    assert letter.headers["x-first-death-queue"] == COMMANDS_QUEUE
    (death,) = letter.headers["x-death"]
    assert death["reason"] == "delivery_limit"


# --------------------------------------------------------------------------- subscriptions


def publish_events(broker_url: str, count: int) -> list[str]:
    publisher = EventPublisher(broker_url)
    ids = [new_id("event") for _ in range(count)]
    try:
        for event_id in ids:
            # Signed by the tests' worker key, as a worker signs: the subscription drops
            # anything else.
            publisher.publish(
                sign_event(
                    {
                        "event_id": event_id,
                        "event_type": "transition.applied",
                        "command_id": new_id("cmd"),
                        "command_type": "approve",
                        "request_id": new_id(),
                    },
                    worker_key(),
                ),
                "transition.applied.approve",
            )
    finally:
        publisher.close()
    return ids


def test_a_durable_subscription_keeps_only_its_newest_events_past_its_length_limit(
    broker_url: str,
) -> None:
    name = new_id("bounded")
    # Given a durable subscription bounded to three events, its subscriber gone
    Subscription(broker_url, name=name, max_length=3, verifier=trusted_worker_keys()).close()
    try:
        # When five events are published
        ids = publish_events(broker_url, 5)
        # Then the subscriber, back, gets the newest three
        with Subscription(
            broker_url, name=name, max_length=3, verifier=trusted_worker_keys()
        ) as subscription:
            got = [subscription.get(timeout=5) for _ in range(3)]
            assert subscription.get(timeout=0.5) is None
    finally:
        delete_subscription(broker_url, name)
    assert [event["event_id"] for event in got if event is not None] == ids[2:]


AGE_LIMIT = 2.0


def test_a_durable_subscription_drops_events_older_than_its_age_limit(broker_url: str) -> None:
    name = new_id("aged")
    Subscription(
        broker_url, name=name, max_age_seconds=AGE_LIMIT, verifier=trusted_worker_keys()
    ).close()
    try:
        publish_events(broker_url, 2)
        # The limit lapsing is the behaviour under test, not a guess at a duration.
        time.sleep(AGE_LIMIT + 0.5)
        # The subscriber is back before the fresh event is published, so that event is read
        # well within its age limit however slow the connection was to open.
        with Subscription(
            broker_url, name=name, max_age_seconds=AGE_LIMIT, verifier=trusted_worker_keys()
        ) as subscription:
            (fresh,) = publish_events(broker_url, 1)
            event = subscription.get(timeout=5)
            assert subscription.get(timeout=0.5) is None
    finally:
        delete_subscription(broker_url, name)
    assert event is not None and event["event_id"] == fresh


def test_a_durable_subscription_is_removed_by_name(broker_url: str) -> None:
    name = new_id("gone")
    Subscription(broker_url, name=name, verifier=trusted_worker_keys()).close()
    # When it is deleted
    assert delete_subscription(broker_url, name) is True
    # Then its queue is gone from the broker, and deleting again says so
    with kombu.Connection(broker_url) as connection, pytest.raises(NotFound):
        connection.channel().queue_declare(SUBSCRIPTION_QUEUE_PREFIX + name, passive=True)
    assert delete_subscription(broker_url, name) is False
