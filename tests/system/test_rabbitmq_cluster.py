"""On a three-node RabbitMQ cluster, with quorum queues, nothing confirmed is lost when nodes
fail: the node leading ``governance.commands`` is killed with commands in flight, then another
node is stopped and started again; the worker (and its beat), the sender and a durable
subscription, each given the three-node URL list, fail over to the surviving nodes; and the
history check finds every confirmed command answered exactly once, none applied twice, nothing
left unpublished."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from celery import Celery

from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE
from producer.history import HistoryReport, check_history
from producer.subscriptions import Subscription, delete_subscription
from tests.support.identities import sign, trusted_worker_keys
from tests.support.processes import HANG_GUARD
from tests.system.harness import start_workers, stop_all, workload
from tests.system.private_rabbitmq_cluster import PrivateRabbitMQCluster, private_rabbitmq_cluster

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[PrivateRabbitMQCluster]:
    with private_rabbitmq_cluster(3) as running:
        yield running


class ConfirmingSender:
    """A plain Celery client on the URL list, with the one setting the quorum queue needs:
    a command counts as sent once the broker confirmed it; one whose publication failed
    (its node went away) is sent again, through the next node."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery(broker=broker_url, set_as_current=False)
        self.app.conf.update(
            broker_transport_options={"confirm_publish": True},
            task_queues=[kombu.Queue(COMMANDS_QUEUE, no_declare=True)],
            broker_connection_timeout=3,
        )
        self.sent: list[dict[str, Any]] = []
        self.resent = 0

    def send(self, payloads: Iterable[dict[str, Any]], deadline: float = 60) -> None:
        stop = time.monotonic() + deadline
        for payload in map(sign, payloads):
            while True:
                try:
                    self.app.send_task(
                        APPLY_COMMAND_TASK,
                        args=[payload],
                        queue=COMMANDS_QUEUE,
                        retry=True,
                        retry_policy={"max_retries": 3, "interval_start": 0.2},
                    )
                    break
                except Exception:
                    if time.monotonic() > stop:
                        raise
                    self.resent += 1
                    time.sleep(0.2)
            self.sent.append(payload)

    def close(self) -> None:
        self.app.close()


def collect_outcomes(
    subscription: Subscription, command_ids: set[str], timeout: float
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    # Every command of ours answered: the worker's beat also expires requests that are due,
    # and the outcome of such a command (not ours) must not end the wait early.
    while not command_ids <= answered:
        if time.monotonic() > deadline:
            missing = sorted(command_ids - answered)
            raise TimeoutError(f"{len(missing)} command(s) without an outcome: {missing[:5]}")
        event = subscription.get(timeout=1.0)
        if event is not None:
            events.append(event)
            answered.add(str(event["command_id"]))
    return events


def settled_history(
    sent: list[dict[str, Any]], events: list[dict[str, Any]], database_url: str, urls: str
) -> HistoryReport:
    """The history check, once the relay has published what the outages left to it (or
    after 30 s, whatever it then says)."""
    deadline = time.monotonic() + 30
    while True:
        report = check_history(
            commands=sent, events=events, database_url=database_url, broker_url=urls
        )
        if not report.violations or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_confirmed_commands_survive_the_loss_of_the_queue_leader_and_a_node_restart(
    cluster: PrivateRabbitMQCluster, database_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    urls = cluster.url_list
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    # Given a worker with its beat, a sender and a durable subscription, each on all three
    # nodes' URLs
    workers = start_workers(
        database_url,
        urls,
        tmp_path,
        count=1,
        app="worker",
        env={"GOVERNANCE_RELAY_INTERVAL": "1", "GOVERNANCE_RELAY_GRACE_SECONDS": "1"},
        extra_args=("-B", "-s", str(tmp_path / "beat-schedule")),
    )
    subscription = Subscription(urls, name=name, verifier=trusted_worker_keys())
    sender = ConfirmingSender(urls)
    try:
        # When a few hundred commands are in flight and the node leading governance.commands
        # is killed
        sender.send(workload(80, "before-kill")[1])
        leader = cluster.leader_of(COMMANDS_QUEUE)
        leader.kill()
        # and more are sent while it is down
        sender.send(workload(30, "leader-down")[1])
        leader.start()
        # and then a second node is stopped, with commands in flight, and started again
        second = cluster.leader_of(COMMANDS_QUEUE)
        if second is leader:
            second = next(node for node in cluster.nodes if node is not leader)
        sender.send(workload(30, "before-stop")[1])
        second.stop()
        sender.send(workload(20, "second-down")[1])
        second.start()
        sender.send(workload(10, "all-back")[1])
        # Then every confirmed command gets its outcome
        command_ids = {payload["command_id"] for payload in sender.sent}
        events = collect_outcomes(subscription, command_ids, timeout=90)
        stop_all(workers)
        # and the history holds: exactly one outcome each, none applied twice, nothing left
        # unpublished or waiting in a queue
        report = settled_history(sender.sent, events, database_url, urls)
        report.assert_clean()
        assert report.commands_checked == len(command_ids) == 510
    finally:
        stop_all(workers)
        sender.close()
        subscription.close()
        delete_subscription(urls, name)
    print(f"cluster run: {time.monotonic() - started:.1f}s, {sender.resent} re-send(s)")
