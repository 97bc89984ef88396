"""A real worker's metrics endpoint, scraped after a known workload, counts exactly what the
commands came to: in per-task mode across two prefork children, and in batch mode."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from prometheus_client.parser import text_string_to_metric_families

from governance.task_message import encode_task_message
from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_QUEUE
from producer._amqp import worker_queue
from tests.conftest import purge_queues
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.ports import reserve_port
from tests.support.processes import WorkerProcess
from tests.system.test_traces import relay_now

MODES = {
    "per-task": {"GOVERNANCE_BATCH_SIZE": "1"},
    "batch": {"GOVERNANCE_BATCH_SIZE": "16", "GOVERNANCE_BATCH_LINGER_MS": "20"},
}

APPLIED, CONFLICTS, INVALID = 12, 5, 3


def send(broker_url: str, payloads: list[dict[str, Any]]) -> None:
    """Publish task messages as any Celery client would, with confirms."""
    queue = worker_queue(COMMANDS_QUEUE)
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        producer = kombu.Producer(conn.channel())
        for payload in payloads:
            message = encode_task_message(payload)
            producer.publish(
                message.body,
                exchange=queue.exchange,
                routing_key=COMMANDS_QUEUE,
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                declare=[queue],
            )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def settled(port: int, total: int) -> dict[Any, float]:
    """The samples once ``total`` commands are counted: a run is recorded just after its
    events went out, so the last outcomes may arrive a moment before their counts."""
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(port)
        if sum(commands_counted(samples).values()) >= total:
            return samples
        if time.monotonic() > deadline:
            raise TimeoutError(f"{total} commands not counted in 60 s: {commands_counted(samples)}")
        time.sleep(0.1)


def commands_counted(samples: dict[Any, float]) -> dict[tuple[str, str, str], float]:
    counted = {}
    for (name, labels), value in samples.items():
        if name == "governance_commands_total":
            by = dict(labels)
            counted[(by["type"], by["outcome"], by["code"])] = value
    return counted


@pytest.fixture(params=list(MODES))
def metered_worker(
    request: pytest.FixtureRequest, database_url: str, broker_url: str, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """A worker of the mode, serving metrics on a port of its own."""
    port = reserve_port()
    worker = WorkerProcess(
        database_url,
        broker_url,
        concurrency=2,
        log_path=tmp_path / "worker.log",
        extra_env={"GOVERNANCE_METRICS_PORT": str(port), **MODES[request.param]},
    )
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 20
        while True:
            try:
                scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield request.param, port
    finally:
        worker.stop()


def test_the_commands_counter_matches_the_outcomes_exactly(
    metered_worker: tuple[str, int], broker_url: str, events: EventListener
) -> None:
    mode, port = metered_worker
    # Given requests submitted, commands on them at a stale revision, and commands of a type
    # that does not exist
    submits = [sign(submit(new_id(), actor="metered")) for _ in range(APPLIED)]
    send(broker_url, submits)
    events.wait_for([p["command_id"] for p in submits], timeout=60)
    stale = [
        sign(command("cancel", p["request_id"], 7, actor="metered")) for p in submits[:CONFLICTS]
    ]
    invalid = [
        {"command_id": new_id("cmd"), "type": f"no_such_type_{i}", "request_id": new_id()}
        for i in range(INVALID)
    ]
    # When the worker has answered them all
    send(broker_url, stale + invalid)
    events.wait_for([p["command_id"] for p in stale + invalid], timeout=60)
    total = APPLIED + CONFLICTS + INVALID
    samples = settled(port, total)

    # Then each outcome is counted once, by bounded labels only
    assert commands_counted(samples) == {
        ("submit", "applied", ""): APPLIED,
        ("cancel", "rejected", "concurrency_conflict"): CONFLICTS,
        ("invalid", "rejected", "invalid_command"): INVALID,
    }
    assert not [key for key in samples if any("cmd-" in value for _, value in key[1])]
    # And the runs are timed: one per command per task, or the batches covering them all
    runs = samples[("governance_transaction_duration_seconds_count", (("mode", _run(mode)),))]
    if mode == "per-task":
        assert runs == total
    else:
        assert 1 <= runs <= total
        assert samples[("governance_batch_size_commands_sum", ())] == total
        assert samples[("governance_batch_size_commands_count", ())] == runs
    # And every published event's lag is recorded
    assert samples[("governance_outbox_lag_seconds_count", (("publisher", "writer"),))] == total


def _run(mode: str) -> str:
    return "task" if mode == "per-task" else "batch"


def test_dead_letters_and_relay_runs_are_counted(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    purge_queues(broker_url)  # a relay run left queued by an earlier test would count too
    port = reserve_port()
    worker = WorkerProcess(
        database_url,
        broker_url,
        concurrency=2,
        log_path=tmp_path / "worker.log",
        extra_env={"GOVERNANCE_METRICS_PORT": str(port)},
    )
    try:
        worker.wait_ready()
        # Given a message that is no task, and a relay run asked for
        queue = worker_queue(COMMANDS_QUEUE)
        with kombu.Connection(broker_url) as conn:
            kombu.Producer(conn.channel()).publish(
                b"not a task", exchange=queue.exchange, routing_key=COMMANDS_QUEUE
            )
        relay_now(broker_url)
        # When both are done
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(port)
            done = samples.get(("governance_relay_runs_total", ()), 0) >= 1 and samples.get(
                ("governance_dead_letters_total", (("cause", "not_a_task"),)), 0
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        worker.stop()
        purge_queues(broker_url, (DEAD_LETTER_QUEUE,))  # later tests expect none
    # Then the dead letter is counted by its cause, and the relay's run and backlog gauge too
    assert samples[("governance_dead_letters_total", (("cause", "not_a_task"),))] == 1
    assert samples[("governance_relay_runs_total", ())] == 1
    assert ("governance_outbox_unpublished_events", ()) in samples
