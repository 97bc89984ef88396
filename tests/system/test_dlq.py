"""``governance dlq list|show|replay|purge`` end to end, on a real broker and real workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from click.testing import CliRunner, Result

from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_QUEUE
from governance_cli.main import cli
from producer.deadletters import DeadLetterQueue
from tests.conftest import purge_queues
from tests.support.commands import command, new_id
from tests.support.events import EventListener
from tests.support.identities import without_signature
from tests.support.processes import HANG_GUARD
from tests.system.harness import (
    Sender,
    applied_count,
    assert_history_clean,
    submitted,
    wait_until,
    workers_running,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]


def governance(broker_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["dlq", *args, "--broker-url", broker_url])


@pytest.fixture
def dead_lettered(
    database_url: str,
    broker_url: str,
    events: EventListener,
    tmp_path: Path,
) -> Iterator[tuple[Sender, list[dict[str, Any]]]]:
    """Two approvals dead-lettered by a handler that raised (the first one twice), and one
    message that is not a command at all."""
    purge_queues(broker_url)
    sender = Sender(broker_url)
    env = {"GOVERNANCE_POISON_RETRY_LIMIT": "0"}
    with workers_running(database_url, broker_url, tmp_path, count=1, env=env):
        targets = [new_id("dlq") for _ in range(2)]
        for target in targets:
            submitted(sender, events, target)
        poisoned = [command("approve", t, 1, command_id=new_id("poison")) for t in targets]
        sender.send([poisoned[0], poisoned[0], poisoned[1]])
        with kombu.Connection(broker_url) as conn:
            kombu.Producer(conn.channel()).publish(
                b"not a command", exchange="", routing_key=COMMANDS_QUEUE, content_type="text/x"
            )
        wait_until(lambda: len(DeadLetterQueue(broker_url).list()) == 4, 30, "four dead letters")
    yield sender, poisoned
    sender.close()
    purge_queues(broker_url, (DEAD_LETTER_QUEUE,))


def test_dlq_list_shows_each_dead_letter_with_its_reason_and_leaves_the_queue_unchanged(
    broker_url: str, dead_lettered: tuple[Sender, list[dict[str, Any]]]
) -> None:
    _, poisoned = dead_lettered
    # When the dead letters are listed twice
    first = governance(broker_url, "list", "--json")
    second = governance(broker_url, "list", "--json")

    # Then both listings show the same four letters, each with its reason
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    letters = [json.loads(line) for line in first.stdout.splitlines()]
    keys = sorted(letter["key"] for letter in letters)
    garbage = next(key for key in keys if key.startswith("sha256:"))
    assert keys == sorted([poisoned[0]["command_id"]] * 2 + [poisoned[1]["command_id"], garbage])
    assert all(letter["reason"] for letter in letters)
    reasons = {letter["key"]: letter["reason"] for letter in letters}
    assert "failed 1 times" in reasons[poisoned[0]["command_id"]]
    assert "untrusted content of type text/x" in reasons[garbage]


def test_dlq_list_names_the_cause_each_letter_was_parked_for(
    broker_url: str, dead_lettered: tuple[Sender, list[dict[str, Any]]]
) -> None:
    _, poisoned = dead_lettered
    # When the dead letters are listed, as JSON and as text
    as_json = governance(broker_url, "list", "--json")
    as_text = governance(broker_url, "list")

    # Then each names its cause, as its cause header carries it
    assert as_json.exit_code == 0 and as_text.exit_code == 0, as_json.output + as_text.output
    causes = {
        letter["key"]: letter["cause"]
        for letter in (json.loads(line) for line in as_json.stdout.splitlines())
    }
    garbage = next(key for key in causes if key.startswith("sha256:"))
    assert causes == {
        poisoned[0]["command_id"]: "poison",
        poisoned[1]["command_id"]: "poison",
        garbage: "undecodable",
    }
    assert sorted(line.split("\t")[3] for line in as_text.stdout.splitlines()) == [
        "poison",
        "poison",
        "poison",
        "undecodable",
    ]
    shown = json.loads(governance(broker_url, "show", garbage).stdout)
    assert shown["headers"]["x-governance-dead-letter-cause"] == "undecodable"


def test_dlq_show_prints_the_command_its_headers_and_its_reason(
    broker_url: str, dead_lettered: tuple[Sender, list[dict[str, Any]]]
) -> None:
    _, poisoned = dead_lettered
    result = governance(broker_url, "show", poisoned[1]["command_id"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert without_signature(shown["body"]) == without_signature(poisoned[1])
    assert shown["reason"] == shown["headers"]["x-governance-dead-letter-reason"]
    # An unknown key is an error that says so
    missing = governance(broker_url, "show", "no-such-letter")
    assert missing.exit_code == 1
    assert "no dead letter no-such-letter" in missing.output


def test_dlq_replay_sends_commands_through_the_normal_path_once_each_and_purge_removes_the_rest(
    database_url: str,
    broker_url: str,
    events: EventListener,
    tmp_path: Path,
    dead_lettered: tuple[Sender, list[dict[str, Any]]],
) -> None:
    sender, poisoned = dead_lettered
    with workers_running(database_url, broker_url, tmp_path, count=1, app="worker"):
        # When the first command (dead-lettered twice) is replayed by its key
        first = poisoned[0]["command_id"]
        replayed = governance(broker_url, "replay", first)
        assert replayed.exit_code == 0, replayed.output
        assert replayed.stdout.split() == [first, first]
        # Then it is applied once, and both replays get the same outcome event
        events.wait_for([first], 30)
        wait_until(lambda: events.drain(0.1) or len(events.of(first)) >= 2, 30, "two outcomes")
        assert len({e["event_id"] for e in events.of(first)}) == 1
        assert applied_count(database_url, first) == 1

        # When the rest is replayed: only the command objects go
        rest = governance(broker_url, "replay", "--all")
        assert rest.exit_code == 0, rest.output
        assert rest.stdout.split() == [poisoned[1]["command_id"]]
        events.wait_for([poisoned[1]["command_id"]], 30)

        # And the message that is not a command cannot be replayed, but can be purged
        (garbage,) = DeadLetterQueue(broker_url).list()
        refused = governance(broker_url, "replay", garbage.key)
        assert refused.exit_code == 1
        assert "cannot be replayed" in refused.output
        purged = governance(broker_url, "purge", "--all")
        assert purged.exit_code == 0, purged.output
        assert purged.stdout.split() == [garbage.key]
        assert DeadLetterQueue(broker_url).list() == []
        # Naming nothing is a usage error
        assert governance(broker_url, "purge").exit_code == 2

    assert_history_clean(sender, events, database_url, broker_url, with_dead_letters=True)
