"""``governance dlq replay`` sends again only what carries a command, and recovers a command
that came wrapped in a task of the wrong shape; on a real broker and a real worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from click.testing import CliRunner, Result

from governance.topology import (
    APPLY_COMMAND_TASK,
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON_HEADER,
)
from governance_cli.main import cli
from producer.deadletters import DEAD_LETTERS, DeadLetter, DeadLetterQueue
from tests.conftest import purge_queues
from tests.support.commands import new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.processes import HANG_GUARD
from tests.system.harness import Sender, applied_count, wait_until, workers_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

MODES = {"per-task": {"GOVERNANCE_BATCH_SIZE": "1"}, "batch": {"GOVERNANCE_BATCH_SIZE": "10"}}


def dlq(broker_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["dlq", *args, "--broker-url", broker_url])


def letters(broker_url: str) -> list[DeadLetter]:
    return DeadLetterQueue(broker_url).list()


def letter_named(broker_url: str, key: str) -> DeadLetter | None:
    return next((letter for letter in letters(broker_url) if letter.key == key), None)


@pytest.fixture
def sender(broker_url: str) -> Iterator[Sender]:
    purge_queues(broker_url)
    sender = Sender(broker_url)
    yield sender
    sender.close()
    purge_queues(broker_url)


def send_with_extra_keyword(sender: Sender, payload: dict[str, Any]) -> None:
    """A task whose keyword arguments hold the command and a key the worker does not know."""
    sender.app.send_task(
        APPLY_COMMAND_TASK,
        args=[],
        kwargs={"command": payload, "force": True},
        queue=COMMANDS_QUEUE,
    )


def send_raw(broker_url: str, body: bytes, content_type: str) -> None:
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        kombu.Producer(conn.channel()).publish(
            body, exchange="", routing_key=COMMANDS_QUEUE, content_type=content_type
        )


def park(broker_url: str, body: object, reason: str) -> None:
    """Put ``body`` (as JSON) in the dead-letter queue with ``reason``, as a worker parks."""
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        kombu.Producer(conn.channel()).publish(
            json.dumps(body).encode(),
            exchange="",
            routing_key=DEAD_LETTER_QUEUE,
            content_type="application/json",
            headers={DEAD_LETTER_REASON_HEADER: reason},
            declare=[DEAD_LETTERS],
        )


@pytest.mark.parametrize("mode", MODES)
def test_a_command_sent_with_an_extra_keyword_argument_is_parked_as_itself_and_replayed(
    mode: str,
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    payload = sign(submit(new_id("kwarg"), initial_status="created"))
    command_id = payload["command_id"]
    with workers_running(
        database_url, broker_url, tmp_path, count=1, app="worker", env=MODES[mode]
    ):
        # Given a command that arrived as a keyword argument, beside an unknown one
        send_with_extra_keyword(sender, payload)

        # Then it is dead-lettered under its own command_id, with the reason
        letter = wait_until(lambda: letter_named(broker_url, command_id), 30, "the dead letter")
        assert "keyword argument" in letter.reason
        assert letter.command == payload
        assert events.of(command_id) == []

        # When it is replayed by its key
        replayed = dlq(broker_url, "replay", command_id)

        # Then it goes through the normal path once and leaves the dead-letter queue
        assert replayed.exit_code == 0, replayed.output
        assert replayed.stdout.split() == [command_id]
        outcome = events.wait_for([command_id], 30)[command_id]
        assert outcome["event_type"] == "transition.applied", outcome
        assert applied_count(database_url, command_id) == 1
        assert letter_named(broker_url, command_id) is None


def test_a_wrapped_dead_letter_of_an_earlier_worker_is_replayed_as_the_command_it_carries(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    # Given a dead letter kept as the task's arguments (how earlier workers parked a command
    # that came as a keyword argument)
    payload = sign(submit(new_id("wrapped"), initial_status="created"))
    command_id = payload["command_id"]
    wrapped = {"args": [], "kwargs": {"command": payload, "force": True}}
    park(broker_url, wrapped, "expected exactly one positional argument")
    assert letter_named(broker_url, command_id) is not None

    with workers_running(database_url, broker_url, tmp_path, count=1, app="worker"):
        # When it is replayed by its command_id
        replayed = dlq(broker_url, "replay", command_id)

        # Then the command it carries is applied
        assert replayed.exit_code == 0, replayed.output
        outcome = events.wait_for([command_id], 30)[command_id]
        assert outcome["event_type"] == "transition.applied", outcome
        assert letters(broker_url) == []


def test_replay_all_skips_what_is_not_a_command_and_leaves_it_with_its_reason(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    payload = sign(submit(new_id("replayable"), initial_status="created"))
    command_id = payload["command_id"]
    with workers_running(database_url, broker_url, tmp_path, count=1, app="worker"):
        # Given two messages the worker parked because they are not commands (an object
        # without a command_id, a text body), and a command parked after them
        sender.send([{"type": "approve", "marker": new_id("marker")}], record=False)
        send_raw(broker_url, b"not a command", "text/plain")
        wait_until(lambda: len(letters(broker_url)) == 2, 30, "two dead letters")
        park(broker_url, payload, "the handler failed")
        before = [(letter.key, letter.reason) for letter in letters(broker_url)]
        not_commands = [key for key, _ in before if key != command_id]
        assert len(not_commands) == 2 and all(k.startswith("sha256:") for k in not_commands)

        # When everything is replayed
        replayed = dlq(broker_url, "replay", "--all")

        # Then only the command is sent, and the others are named as skipped
        assert replayed.exit_code == 0, replayed.output
        assert replayed.stdout.split() == [command_id]
        for key in not_commands:
            assert f"skipped {key}: not a command" in replayed.stderr
        assert "1 dead letter(s) replayed, 2 skipped" in replayed.stderr
        outcome = events.wait_for([command_id], 30)[command_id]
        assert outcome["event_type"] == "transition.applied", outcome

        # And they are still in the dead-letter queue, in their places, reasons intact
        after = [(letter.key, letter.reason) for letter in letters(broker_url)]
        assert after == [(key, reason) for key, reason in before if key != command_id]
