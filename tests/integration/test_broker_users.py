"""The deployment's broker users (``deploy/rabbitmq/users.sh``) against RabbitMQ's own
permission checks: each may do what its part needs, and the broker refuses the rest.

Every test runs on a virtual host of its module, with the users made by the deployment's
script, and a real worker connected as the worker user.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import pytest
from amqp import Message
from amqp.exceptions import AccessRefused, ChannelError

from governance.commands import Command
from governance.topology import (
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    subscription_arguments,
)
from producer import GovernanceClient
from producer.deadletters import DeadLetterQueue
from producer.subscriptions import EventFilter, Subscription, delete_subscription
from tests.deployment.test_readme import marked_block
from tests.support.commands import new_id, submit
from tests.support.events import EventListener
from tests.support.identities import Keyring, sign
from tests.support.processes import WorkerProcess, run_governance
from tests.support.services import (
    BROKER_ROLES,
    BROKER_USERS_SCRIPT,
    deployment_broker_users,
    spare_vhost,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTENT = {"operation_name": "raise-limit", "risk_level": "high"}


@pytest.fixture(scope="module")
def vhost_url(broker_url: str) -> Iterator[str]:
    """A virtual host of this module, as the test broker's administrator."""
    with spare_vhost(broker_url) as url:
        yield url


@pytest.fixture(scope="module")
def users(vhost_url: str) -> Iterator[dict[str, str]]:
    """The vhost as each broker user of the deployment (role → URL)."""
    with deployment_broker_users(vhost_url) as urls:
        yield urls


@pytest.fixture(scope="module")
def worker(
    users: dict[str, str], database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real worker connected as the worker user (it declares the topology)."""
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    process = WorkerProcess(database_url, users["worker"], log_path=log_path)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def producer(users: dict[str, str], database_url: str) -> Iterator[GovernanceClient]:
    with GovernanceClient(
        users["producer"], database_url, timeout=30, signing_key=Keyring()
    ) as client:
        yield client


def refusal(url: str, action: str) -> AccessRefused:
    """What the broker answers ``action`` (``publish:EXCHANGE:KEY`` or ``get:QUEUE``) done as
    the user of ``url``: a channel error (the broker closes the channel, the connection
    stays)."""
    with kombu.Connection(url, connect_timeout=10) as connection:
        channel = connection.channel()
        verb, _, target = action.partition(":")
        with pytest.raises(AccessRefused) as refused:
            if verb == "publish":
                exchange, _, routing_key = target.partition(":")
                # Confirmed, so that the refusal is seen on this call.
                channel.basic_publish_confirm(
                    Message("{}"), exchange=exchange, routing_key=routing_key, confirm_timeout=30
                )
            else:
                channel.basic_get(target)
        assert isinstance(refused.value, ChannelError)
        assert connection.connected
        return refused.value


def a_submit(client: GovernanceClient) -> Command:
    return client.submit(
        new_id(),
        state_id="cfg-1",
        state_type="config",
        mutation_type="update",
        intent=INTENT,
        actor="ci",
    )


@pytest.mark.usefixtures("worker")
def test_a_producer_is_refused_publishing_to_the_events_exchange(users: dict[str, str]) -> None:
    refused = refusal(users["producer"], f"publish:{EVENTS_EXCHANGE}:transition.applied.submit")
    assert refused.reply_code == 403
    assert EVENTS_EXCHANGE in str(refused)


@pytest.mark.usefixtures("worker")
def test_a_producer_is_refused_reading_the_command_queue(users: dict[str, str]) -> None:
    refused = refusal(users["producer"], f"get:{COMMANDS_QUEUE}")
    assert refused.reply_code == 403
    assert COMMANDS_QUEUE in str(refused)


@pytest.mark.usefixtures("worker")
def test_a_producer_is_refused_publishing_to_the_default_exchange(users: dict[str, str]) -> None:
    refused = refusal(users["producer"], f"publish::{COMMANDS_QUEUE}")
    assert refused.reply_code == 403
    assert "amq.default" in str(refused)


@pytest.mark.usefixtures("worker")
def test_a_command_sent_as_the_producer_is_applied_by_the_worker_user_and_answered(
    producer: GovernanceClient,
) -> None:
    command = a_submit(producer)
    event = producer.send_and_wait(command)
    assert event["event_type"] == "transition.applied", event
    assert event["command_id"] == command.command_id


@pytest.mark.usefixtures("worker")
def test_the_readmes_plain_celery_client_sends_as_the_producer_user(
    users: dict[str, str], vhost_url: str
) -> None:
    # Given the README's recipe for any Celery client, exactly as written, as the producer
    recipe = marked_block("plain-celery-client")
    payload = sign(submit(new_id("plain"), actor="ci"))
    scope: dict[str, Any] = {"BROKER_URL": users["producer"], "command": payload}
    events = EventListener(vhost_url)
    try:
        # When it runs
        exec(compile(recipe, "README.md", "exec"), scope)
        # Then the worker applies the command
        outcome = events.wait_for([payload["command_id"]])[payload["command_id"]]
    finally:
        events.close()
        if "celery_app" in scope:
            scope["celery_app"].close()
    assert outcome["event_type"] == "transition.applied", outcome


@pytest.mark.usefixtures("worker")
def test_a_subscriber_creates_and_reads_its_own_subscription(
    users: dict[str, str], producer: GovernanceClient
) -> None:
    # Given a durable subscription declared and bound as the subscriber
    name = f"audit-{uuid.uuid4().hex[:8]}"
    subscription = Subscription(
        users["subscriber"], EventFilter(), name=name, verifier=producer.event_verifier
    )
    try:
        # When a producer's command is applied
        command = a_submit(producer)
        producer.send(command)
        # Then the subscriber reads its outcome (each wait bounded; None ends the stream)
        received = iter(lambda: subscription.get(timeout=30), None)
        assert command.command_id in (event["command_id"] for event in received)
    finally:
        subscription.close()
        assert delete_subscription(users["subscriber"], name)


@pytest.mark.usefixtures("worker")
def test_a_subscriber_is_refused_reading_the_command_queue(users: dict[str, str]) -> None:
    refused = refusal(users["subscriber"], f"get:{COMMANDS_QUEUE}")
    assert refused.reply_code == 403


@pytest.mark.usefixtures("worker")
def test_a_subscriber_is_refused_publishing_commands(users: dict[str, str]) -> None:
    refused = refusal(users["subscriber"], f"publish:{COMMANDS_QUEUE}:{COMMANDS_QUEUE}")
    assert refused.reply_code == 403
    assert COMMANDS_QUEUE in str(refused)


@pytest.mark.usefixtures("worker")
def test_a_subscriber_is_refused_a_queue_outside_its_subscriptions(users: dict[str, str]) -> None:
    with kombu.Connection(users["subscriber"], connect_timeout=10) as connection:
        channel = connection.channel()
        with pytest.raises(AccessRefused):
            channel.queue_declare("somebody-else", durable=True, arguments=subscription_arguments())


@pytest.mark.usefixtures("worker")
def test_an_operator_replays_a_dead_letter_and_the_worker_applies_it(
    users: dict[str, str], vhost_url: str
) -> None:
    # Given a signed command parked in the dead-letter queue (as a worker parks one)
    command = sign(submit(new_id(), actor="ci"))
    with kombu.Connection(users["worker"], connect_timeout=10) as connection:
        kombu.Producer(connection.channel()).publish(
            json.dumps(command),
            exchange="",
            routing_key=DEAD_LETTER_QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
        )
    events = EventListener(vhost_url)
    try:
        # When the operator lists and replays it
        letters = DeadLetterQueue(users["operator"])
        assert [letter.key for letter in letters.list()] == [command["command_id"]]
        replay = letters.replay([command["command_id"]])
        # Then it is gone from the queue and the worker applied it
        assert [letter.key for letter in replay.replayed] == [command["command_id"]]
        outcome = events.wait_for([command["command_id"]])[command["command_id"]]
        assert outcome["event_type"] == "transition.applied", outcome
    finally:
        events.close()


def test_an_operator_reads_the_status_of_the_workers_and_their_queues(
    users: dict[str, str], database_url: str, worker: WorkerProcess
) -> None:
    done = run_governance(
        database_url, users["operator"], "status", "--json", "--inspect-timeout", "5"
    )
    assert done.returncode in (0, 8), done.stderr
    status = json.loads(done.stdout)
    assert [w["name"] for w in status["workers"]], status
    depths = {queue["name"]: queue["exists"] for queue in status["queues"]}
    assert depths[COMMANDS_QUEUE] is True


@pytest.mark.usefixtures("worker")
def test_an_operator_is_refused_reading_the_command_queue(users: dict[str, str]) -> None:
    refused = refusal(users["operator"], f"get:{COMMANDS_QUEUE}")
    assert refused.reply_code == 403


def test_the_cli_on_a_broker_no_worker_has_prepared_says_to_start_a_worker(
    broker_url: str, database_url: str
) -> None:
    # Given a virtual host with the users but no worker yet (no dead-letter queue)
    with spare_vhost(broker_url) as empty, deployment_broker_users(empty) as fresh:
        # When the operator lists the dead letters
        done = run_governance(database_url, fresh["operator"], "dlq", "list")
    # Then the broker's refusal is explained, not taken for a wrong password
    assert done.returncode == 7, done.stderr
    assert "governance.commands.dead" in done.stderr
    assert "start one first" in done.stderr
    assert "refused the login" not in done.stderr


def test_the_script_takes_passwords_from_files_and_sets_them_again_when_rerun(
    vhost_url: str, tmp_path: Path
) -> None:
    prefix = f"governance-test-{uuid.uuid4().hex[:8]}-"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "GOVERNANCE_MQ_VHOST": urlsplit(vhost_url).path.lstrip("/"),
        "GOVERNANCE_MQ_USER_PREFIX": prefix,
    }
    for role in BROKER_ROLES:
        environment[f"GOVERNANCE_MQ_{role.upper()}_PASSWORD_FILE"] = str(tmp_path / role)

    def run_with(password: str) -> None:
        for role in BROKER_ROLES:
            (tmp_path / role).write_text(password)
        done = subprocess.run(
            ["sh", str(BROKER_USERS_SCRIPT)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    try:
        # Given the users made once, then again with other passwords
        run_with("first-password")
        run_with("second-password")
        # Then the producer logs in with the second password
        parts = urlsplit(vhost_url)
        login = f"{prefix}producer:second-password@{parts.hostname}:{parts.port or 5672}"
        with kombu.Connection(urlunsplit(parts._replace(netloc=login))) as connection:
            connection.ensure_connection(max_retries=1)
            assert connection.connected
    finally:
        for role in BROKER_ROLES:
            subprocess.run(
                ["rabbitmqctl", "delete_user", f"{prefix}{role}"],
                capture_output=True,
                timeout=60,
                check=False,
            )
