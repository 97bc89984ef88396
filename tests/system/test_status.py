"""``governance status`` as a health check, against a real broker, database and worker: exit
0 when healthy, 8 with the reason when something needs attention, 7 when a service cannot
be reached; ``--json`` always one JSON document on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_QUEUE, MAINTENANCE_QUEUE
from producer._amqp import worker_queue
from tests.conftest import migrated_database, purge_queues
from tests.support import identities
from tests.support.commands import new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.policies import apply_policy
from tests.support.processes import PROJECT_ROOT, BeatProcess, WorkerProcess, service_env
from tests.support.services import (
    broker_user_who_cannot_publish_events,
    fresh_database,
)
from tests.system.test_metrics import send
from worker.migrate import migrate

EXIT_UNAVAILABLE, EXIT_NEEDS_ATTENTION = 7, 8


def status(database_url: str, broker_url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run ``governance status --json ARGS``: its exit code, document and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "governance_cli.status", "--json", *args],
        cwd=PROJECT_ROOT,
        env=service_env(database_url, broker_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


@pytest.fixture
def private_database(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of this test alone: its outbox holds only this test's events."""
    with fresh_database(postgres_server_url) as url:
        migrate(url)
        apply_policy(url)
        identities.track(url)
        try:
            yield url
        finally:
            identities.untrack(url)


@pytest.fixture
def quiet_broker(broker_url: str) -> str:
    """The test broker with its work and dead-letter queues empty."""
    purge_queues(broker_url)
    return broker_url


@pytest.fixture
def publish_blocked_broker_url(quiet_broker: str) -> Iterator[str]:
    """The test broker as a user who may do everything but publish outcome events."""
    with broker_user_who_cannot_publish_events(quiet_broker) as url:
        yield url


def running(database_url: str, broker_url: str, tmp_path: Path, **env: str) -> WorkerProcess:
    worker = WorkerProcess(
        database_url, broker_url, concurrency=1, log_path=tmp_path / "w.log", extra_env=env
    )
    worker.wait_ready()
    return worker


def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def unpublished(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox_events WHERE published_at IS NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


def depth(broker_url: str, name: str) -> int:
    with kombu.Connection(broker_url) as conn:
        return int(conn.channel().queue_declare(name, passive=True)[1])


#: How long ``status`` waits for workers' replies where the test expects one: a worker busy
#: with a batch on a loaded machine answers late, and "no worker" would be a wrong answer.
INSPECT_WAIT = ("--inspect-timeout", "5")


def test_a_consuming_worker_and_an_empty_backlog_are_healthy(
    private_database: str, quiet_broker: str, events: EventListener, tmp_path: Path
) -> None:
    worker = running(private_database, quiet_broker, tmp_path)
    try:
        payload = sign(submit(new_id(), actor="checked"))
        send(quiet_broker, [payload])
        events.wait_for([payload["command_id"]], timeout=60)
        wait_until(lambda: not unpublished(private_database), "the event marked published")
        code, document, _ = status(private_database, quiet_broker, *INSPECT_WAIT)
    finally:
        worker.stop()
    assert (code, document["healthy"], document["problems"]) == (0, True, [])
    (seen,) = document["workers"]
    assert COMMANDS_QUEUE in seen["queues"]
    assert (seen["auth"], seen["policy"]) == ("signed", "required")
    (commands,) = [q for q in document["queues"] if q["name"] == COMMANDS_QUEUE]
    assert commands["consumers"] >= 1


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("GOVERNANCE_POLICY", "requester", "runs GOVERNANCE_POLICY=requester (development only)"),
        ("GOVERNANCE_AUTH", "off", "runs GOVERNANCE_AUTH=off (development only)"),
    ],
)
def test_a_worker_in_a_development_mode_is_reported_and_needs_attention(
    private_database: str, quiet_broker: str, tmp_path: Path, setting: str, value: str, said: str
) -> None:
    if setting == "GOVERNANCE_AUTH":
        # A development deployment: the only one a development-mode worker starts on
        migrate(private_database, auth=value)
    worker = running(private_database, quiet_broker, tmp_path, **{setting: value})
    try:
        code, document, _ = status(private_database, quiet_broker, *INSPECT_WAIT)
    finally:
        worker.stop()
    (seen,) = document["workers"]
    assert seen["policy" if setting == "GOVERNANCE_POLICY" else "auth"] == value
    assert code == EXIT_NEEDS_ATTENTION
    assert [p for p in document["problems"] if seen["name"] in p and said in p]


def test_a_worker_in_another_trust_mode_than_the_deployments_needs_attention(
    private_database: str, quiet_broker: str, tmp_path: Path
) -> None:
    # Given a development-mode worker started while the deployment was in development mode
    migrate(private_database, auth="off")
    worker = running(private_database, quiet_broker, tmp_path, GOVERNANCE_AUTH="off")
    try:
        # When the deployment is switched to signed while it runs, and the status is asked
        migrate(private_database, auth="signed")
        code, document, _ = status(private_database, quiet_broker, *INSPECT_WAIT)
    finally:
        worker.stop()
    # Then the status shows the recorded mode and the worker's, and names the mismatch
    (seen,) = document["workers"]
    assert (document["auth"], seen["auth"]) == ("signed", "off")
    assert code == EXIT_NEEDS_ATTENTION
    assert [
        p
        for p in document["problems"]
        if seen["name"] in p and "but the deployment's trust mode is signed" in p
    ]


def test_the_recorded_trust_mode_is_shown(private_database: str, quiet_broker: str) -> None:
    _, document, _ = status(private_database, quiet_broker)

    assert document["auth"] == "signed"


def test_dead_letters_waiting_need_attention(
    private_database: str, quiet_broker: str, tmp_path: Path
) -> None:
    # Given a worker that parked a message that is no command
    worker = running(private_database, quiet_broker, tmp_path)
    try:
        with kombu.Connection(quiet_broker) as conn:
            queue = worker_queue(COMMANDS_QUEUE)
            kombu.Producer(conn.channel()).publish(
                b"not a task", exchange=queue.exchange, routing_key=COMMANDS_QUEUE
            )
        wait_until(lambda: depth(quiet_broker, DEAD_LETTER_QUEUE) == 1, "the dead letter")
        # When the status is asked
        code, document, _ = status(private_database, quiet_broker, *INSPECT_WAIT)
    finally:
        worker.stop()
        purge_queues(quiet_broker, (DEAD_LETTER_QUEUE,))  # later tests expect none
    # Then it needs attention, and says why
    assert code == EXIT_NEEDS_ATTENTION and document["healthy"] is False
    assert [p for p in document["problems"] if "1 dead letter(s)" in p]


def test_an_outbox_stuck_behind_a_blocked_publisher_needs_attention(
    private_database: str, publish_blocked_broker_url: str, quiet_broker: str, tmp_path: Path
) -> None:
    # Given a worker that commits commands but cannot publish their events
    worker = running(private_database, publish_blocked_broker_url, tmp_path)
    try:
        send(quiet_broker, [sign(submit(new_id(), actor="checked"))])
        answers: list[tuple[int, dict[str, Any]]] = []

        def backlog_reported() -> bool:
            code, document, _ = status(
                private_database, quiet_broker, "--max-outbox-age", "1", *INSPECT_WAIT
            )
            answers.append((code, document))
            return any("unpublished event(s)" in p for p in document["problems"])

        # When the oldest unpublished event has waited past the threshold
        wait_until(backlog_reported, "the backlog reported", timeout=60)
    finally:
        worker.stop()
    # Then the status needs attention, and names the backlog
    code, document = answers[-1]
    assert code == EXIT_NEEDS_ATTENTION
    assert document["unpublished_events"] == 1


def test_no_worker_consuming_needs_attention(private_database: str, quiet_broker: str) -> None:
    code, document, _ = status(private_database, quiet_broker, "--inspect-timeout", "0.3")
    assert code == EXIT_NEEDS_ATTENTION
    assert f"no worker is consuming {COMMANDS_QUEUE}" in document["problems"]


def test_an_unreachable_broker_exits_7_with_a_json_document(private_database: str) -> None:
    code, document, _ = status(private_database, "amqp://guest:hidden-pw@127.0.0.1:1//")
    assert code == EXIT_UNAVAILABLE
    assert (document["healthy"], document["unreachable"]) == (False, "broker")
    assert "hidden-pw" not in json.dumps(document)


def test_an_unreachable_database_exits_7(quiet_broker: str) -> None:
    code, document, stderr = status("postgresql://u:hidden-pw@127.0.0.1:1/none", quiet_broker)
    assert (code, document["unreachable"]) == (EXIT_UNAVAILABLE, "database")
    assert "hidden-pw" not in json.dumps(document) + stderr


NEEDS_CAB = """\
policy: 1
rules:
  - id: default
    require: [{group: status-cab}]
"""


def test_no_approval_policy_applied_needs_attention(
    postgres_server_url: str, quiet_broker: str
) -> None:
    # Given a database migrated and nothing more: every submit would be refused
    with migrated_database(postgres_server_url, policy=None) as url:
        code, document, _ = status(url, quiet_broker, "--inspect-timeout", "0.3")

    assert code == EXIT_NEEDS_ATTENTION
    assert document["policy"]["version"] is None and document["policy"]["satisfiable"] is None
    assert (
        "no approval policy is applied: workers in the default (required) mode refuse every "
        "submit (governance policy apply FILE)"
    ) in document["problems"]


def test_a_satisfiable_active_policy_is_reported_and_needs_nothing(
    private_database: str, quiet_broker: str
) -> None:
    _, document, _ = status(private_database, quiet_broker, "--inspect-timeout", "0.3")

    policy = document["policy"]
    assert (policy["rules"], policy["satisfiable"], policy["shortfalls"]) == (1, True, [])
    assert not [p for p in document["problems"] if "approval policy" in p]


def test_an_active_policy_the_registry_no_longer_satisfies_needs_attention(
    private_database: str, quiet_broker: str
) -> None:
    # Given a policy needing one of status-cab, whose only member was deactivated by force
    identities.register(
        private_database, "status-cab-1", roles=("approver",), groups=("status-cab",)
    )
    version, _ = apply_policy(private_database, NEEDS_CAB)
    with psycopg.connect(private_database, autocommit=True) as conn:
        conn.execute("UPDATE actors SET active = false WHERE actor_id = 'status-cab-1'")

    # When the status is asked, as JSON and as text
    code, document, _ = status(private_database, quiet_broker, "--inspect-timeout", "0.3")
    text = subprocess.run(
        [sys.executable, "-m", "governance_cli.status", "--inspect-timeout", "0.3"],
        cwd=PROJECT_ROOT,
        env=service_env(private_database, quiet_broker),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then the policy needs attention, naming the rule and the shortfall
    assert code == text.returncode == EXIT_NEEDS_ATTENTION
    policy = document["policy"]
    assert (policy["version"], policy["satisfiable"]) == (version, False)
    shortfall = (
        "rule default: for an outsider, step 1 (group status-cab, 1 approval) needs 1 distinct "
        "eligible approver; none can be matched; not eligible: status-cab-1 (inactive)"
    )
    assert shortfall in policy["shortfalls"]
    (problem,) = [p for p in document["problems"] if "approval policy" in p]
    assert problem.startswith(
        f"approval policy version {version} cannot be satisfied by the registry: {shortfall}"
    )
    assert f"approval policy: version {version} (1 rule(s)), UNSATISFIABLE" in text.stdout
    assert f"governance: needs attention: {problem}" in text.stderr


#: Beat sending a relay run and an expiry sweep every half second: with the expiry they
#: used to carry (twice the interval), a run waited a second at most before the broker
#: dead-lettered it.
FAST_MAINTENANCE = {"GOVERNANCE_RELAY_INTERVAL": "0.5", "GOVERNANCE_EXPIRY_INTERVAL": "0.5"}


def test_the_status_stays_healthy_after_the_workers_were_down_while_beat_ran(
    private_database: str, quiet_broker: str, tmp_path: Path
) -> None:
    beat = BeatProcess(private_database, quiet_broker, tmp_path, extra_env=FAST_MAINTENANCE)
    try:
        # Given beat running and no worker up, until forty maintenance runs are queued
        # (twenty seconds of them, ten times what they used to live)
        wait_until(
            lambda: depth(quiet_broker, MAINTENANCE_QUEUE) >= 40,
            "maintenance runs queued",
            timeout=90,
        )
        # When a worker is back, and has run what was queued
        worker = running(private_database, quiet_broker, tmp_path)
        try:
            wait_until(
                lambda: depth(quiet_broker, MAINTENANCE_QUEUE) < 5, "the runs taken", timeout=60
            )
            code, document, _ = status(private_database, quiet_broker, *INSPECT_WAIT)
        finally:
            worker.stop()
    finally:
        beat.stop()
    # Then nothing was dead-lettered, and the status is healthy
    assert depth(quiet_broker, DEAD_LETTER_QUEUE) == 0
    assert (code, document["problems"]) == (0, [])


def test_a_beat_whose_clock_is_behind_still_gets_an_unpublished_event_relayed(
    private_database: str, publish_blocked_broker_url: str, quiet_broker: str, tmp_path: Path
) -> None:
    # Given an event a worker committed but could not publish
    blocked = running(private_database, publish_blocked_broker_url, tmp_path)
    try:
        send(quiet_broker, [sign(submit(new_id(), actor="checked"))])
        wait_until(lambda: unpublished(private_database) == 1, "the event left unpublished")
    finally:
        blocked.stop()
    # When a worker that can publish runs, and beat's clock is ten seconds behind its own
    worker = running(private_database, quiet_broker, tmp_path)
    beat = BeatProcess(
        private_database,
        quiet_broker,
        tmp_path,
        app="tests.system.skewed_beat_app",
        extra_env={"GOVERNANCE_TEST_CLOCK_SKEW": "10", **FAST_MAINTENANCE},
    )
    try:
        # Then the relay publishes the event
        wait_until(lambda: unpublished(private_database) == 0, "the event relayed", timeout=30)
    finally:
        beat.stop()
        worker.stop()
    assert depth(quiet_broker, DEAD_LETTER_QUEUE) == 0
