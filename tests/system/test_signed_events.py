"""Signed events against a real worker and broker: every event carries its worker's proof,
and a forged event, published straight to ``governance.events`` by someone who may publish
there, opens no gate and is shown by no ``watch``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from governance.topology import EVENTS_EXCHANGE
from producer import GovernanceClient
from producer.event_proof import EventVerifier
from producer.keys import SigningKey, generate, write_key_file
from producer.signing import sign_event
from tests.support.commands import new_id
from tests.support.events import EventListener
from tests.support.identities import Keyring, key_for, register, register_worker
from tests.support.processes import PROJECT_ROOT, WorkerProcess, service_env
from worker import registry

pytestmark = pytest.mark.system

EVENTS = kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(broker_url, database_url, signing_key=Keyring()) as governance:
        yield governance


@pytest.fixture
def start(
    running_worker: WorkerProcess, database_url: str, broker_url: str
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``governance ARGS...`` in the background; stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def launch(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "governance_cli.main", *args],
            cwd=PROJECT_ROOT,
            env=service_env(database_url, broker_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield launch
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def submit_pending(client: GovernanceClient, request_id: str) -> dict[str, Any]:
    return client.send_and_wait(
        client.submit(
            request_id,
            state_id="db-1",
            state_type="database",
            mutation_type="migrate",
            intent={"operation_name": "add-index"},
            pending_reason="manual_review",
            actor="ci",
        )
    )


def approval_forged_from(submitted: dict[str, Any]) -> dict[str, Any]:
    """What a forger would publish to open a gate: the request's submit event made into an
    approval of it (new ids, the next revision, status approved), its proof left as it was."""
    forged = copy.deepcopy(submitted)
    forged.update(
        event_id=str(uuid.uuid4()),
        command_id=new_id("forged"),
        command_type="approve",
        from_status="pending",
        to_status="approved",
        revision=2,
        sequence=submitted["sequence"] + 1_000_000,
        decisions=[],
    )
    forged["request"].update(status="approved", revision=2, pending_reason=None)
    return forged


def retired_worker_key(database_url: str) -> SigningKey:
    """A key of a worker actor, registered and then revoked."""
    actor = new_id("retired-worker")
    key = register_worker(database_url, actor)
    with psycopg.connect(database_url, autocommit=True) as conn:
        registry.revoke_key(conn, key.key_id)
    return key


def forge(kind: str, submitted: dict[str, Any], database_url: str) -> dict[str, Any]:
    forged = approval_forged_from(submitted)
    if kind == "unsigned":
        forged["proof"] = None
        return forged
    if kind == "altered":
        return forged  # the genuine submit event's proof, over other content
    keys = {
        "unregistered key": lambda: generate(new_id("mallory")),
        "key of an actor without the worker role": lambda: register(
            database_url, "alice-" + new_id(), roles=("approver", "operator")
        ),
        "revoked worker key": lambda: retired_worker_key(database_url),
    }
    return sign_event(forged, keys[kind]())


def publish_straight_to_the_exchange(broker_url: str, event: dict[str, Any]) -> None:
    """Publish as anyone with publish access to ``governance.events`` may, confirmed."""
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        kombu.Producer(conn.channel()).publish(
            json.dumps(event),
            exchange=EVENTS,
            routing_key=f"transition.applied.{event['command_type']}",
            content_type="application/json",
            content_encoding="utf-8",
            message_id=event["event_id"],
            delivery_mode=2,
            declare=[EVENTS],
        )


FORGERIES = [
    "unsigned",
    "altered",
    "unregistered key",
    "key of an actor without the worker role",
    "revoked worker key",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_a_gate_does_not_open_on_a_forged_approval(
    kind: str,
    client: GovernanceClient,
    start: Callable[..., subprocess.Popen[str]],
    database_url: str,
    broker_url: str,
) -> None:
    # Given a pending request and a gate waiting for its approval, listening
    request_id = new_id()
    submitted = submit_pending(client, request_id)
    gate = start("wait", request_id, "--until", "approved", "--timeout", "2m", "--json")
    assert gate.stderr is not None
    assert "now pending" in gate.stderr.readline()

    # When someone with publish access to the exchange publishes a forged approval, and only
    # then the request is approved for real
    forged = forge(kind, submitted, database_url)
    publish_straight_to_the_exchange(broker_url, forged)
    approved = client.send_and_wait(client.approve(request_id, expected_revision=1, actor="op"))

    # Then the gate opened on the genuine approval, and said it ignored the forged one
    stdout, stderr = gate.communicate(timeout=60)
    assert gate.returncode == 0, stderr
    assert json.loads(stdout)["event_id"] == approved["event_id"]
    assert forged["event_id"] in stderr


def test_a_gate_that_sees_only_a_forged_approval_times_out(
    client: GovernanceClient,
    start: Callable[..., subprocess.Popen[str]],
    database_url: str,
    broker_url: str,
) -> None:
    # Given a pending request and a gate waiting a few seconds for its approval
    request_id = new_id()
    submitted = submit_pending(client, request_id)
    gate = start("wait", request_id, "--until", "approved", "--timeout", "5s")
    assert gate.stderr is not None
    assert "now pending" in gate.stderr.readline()

    # When only a forged approval is published
    forged = forge("unregistered key", submitted, database_url)
    publish_straight_to_the_exchange(broker_url, forged)

    # Then the gate exits 5 (timed out), never 0
    _, stderr = gate.communicate(timeout=60)
    assert gate.returncode == 5, stderr
    assert forged["event_id"] in stderr


def test_watch_shows_the_genuine_events_and_not_a_forged_one(
    client: GovernanceClient,
    start: Callable[..., subprocess.Popen[str]],
    database_url: str,
    broker_url: str,
) -> None:
    # Given a pending request, watched until one more of its events has been shown
    request_id = new_id()
    submitted = submit_pending(client, request_id)
    watch = start("watch", "--request-id", request_id, "--count", "1", "--json")
    assert watch.stderr is not None
    assert "following events" in watch.stderr.readline()

    # When a forged approval is published, then the request is approved for real
    publish_straight_to_the_exchange(broker_url, forge("altered", submitted, database_url))
    approved = client.send_and_wait(client.approve(request_id, expected_revision=1, actor="op"))

    # Then the one event shown is the genuine approval
    stdout, stderr = watch.communicate(timeout=60)
    assert watch.returncode == 0, stderr
    assert [json.loads(line)["event_id"] for line in stdout.splitlines()] == [approved["event_id"]]


def test_every_event_a_worker_publishes_verifies_against_its_registered_worker_key(
    client: GovernanceClient, database_url: str, broker_url: str
) -> None:
    listener = EventListener(broker_url)
    try:
        # Given an applied and a rejected command
        request_id = new_id()
        submitted = submit_pending(client, request_id)
        rejected = client.send_and_wait(client.approve(request_id, expected_revision=7, actor="o"))
        got = listener.wait_for([submitted["command_id"], rejected["command_id"]])
    finally:
        listener.close()

    # Then both carry the proof of the tests' worker key, which the registry vouches for
    verifier = EventVerifier.registry(database_url)
    for event in got.values():
        assert event["proof"]["key_id"] == key_for("test-worker").key_id
        assert verifier.check(event).verified


def test_a_worker_in_signed_mode_without_a_key_refuses_to_start_saying_why(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given no GOVERNANCE_WORKER_KEY, in the default (signed) mode
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(
        database_url, broker_url, log_path=log_path, extra_env={"GOVERNANCE_WORKER_KEY": ""}
    )
    try:
        # When it starts, Then it exits 1 with one line naming the setting
        assert worker.process.wait(timeout=60) == 1
    finally:
        worker.stop()
    lines = [line for line in log_path.read_text().splitlines() if "GOVERNANCE_WORKER_KEY" in line]
    assert len(lines) == 1
    assert "signed mode" in lines[0]


def test_a_worker_whose_key_is_not_registered_warns_that_its_events_will_be_ignored(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a worker key nobody registered
    key_path = tmp_path / "stray.key"
    write_key_file(generate(new_id("stray-worker")), key_path)

    # When a worker starts with it
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(
        database_url,
        broker_url,
        log_path=log_path,
        extra_env={"GOVERNANCE_WORKER_KEY": str(key_path)},
        # Its own node name: the module's running worker holds the default one's mailbox.
        extra_args=("-n", f"{new_id('stray')}@%h"),
    )
    try:
        worker.wait_ready()
    finally:
        worker.stop()

    # Then its log says, before it is ready, that subscribers will ignore its events
    log = log_path.read_text()
    assert "is not registered, so subscribers ignore the events this worker signs" in log
