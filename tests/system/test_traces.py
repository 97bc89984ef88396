"""One trace per command across the broker: the producer's span, the worker's span as its
child, and a subscriber's span linked to the worker's, also when the relay publishes the
event long after the commit. Producer, worker and subscriber are separate processes, each
with an OpenTelemetry SDK writing its spans to a file of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

from governance.topology import MAINTENANCE_QUEUE, RELAY_OUTBOX_TASK
from producer._amqp import worker_queue
from tests.support.commands import new_id, submit
from tests.support.identities import sign
from tests.support.processes import PROJECT_ROOT, WorkerProcess, service_env
from tests.support.services import broker_user_who_cannot_publish_events

#: Sends the signed commands given as JSON on stdin through the producer library, traced.
PRODUCER = """
import json, sys
from worker.observability import tracing
if sys.argv[2]:
    tracing.configure("console", sys.argv[2], service_name="test-producer")
from producer.client import GovernanceClient
from governance.topology import COMMANDS_QUEUE
from producer._amqp import worker_queue
with GovernanceClient(sys.argv[1]) as client:
    # Declared as the worker declares it (until the client does so itself).
    client._app.conf.task_queues = [worker_queue(COMMANDS_QUEUE)]
    for payload in json.load(sys.stdin):
        client.send(payload)
"""

#: Follows the outcome events, one span per event through the subscriber-side helper, until
#: it has seen the command ids given; says "ready" once subscribed.
SUBSCRIBER = """
import sys, time
from worker.observability import tracing
tracing.configure("console", sys.argv[2], service_name="test-subscriber")
from producer.subscriptions import Subscription, event_span
wanted = set(sys.argv[3:])
with Subscription(sys.argv[1]) as subscription:
    print("ready", flush=True)
    deadline = time.monotonic() + 90
    while wanted and time.monotonic() < deadline:
        event = subscription.get(timeout=1)
        if event is None:
            continue
        with event_span(subscription.last_headers) as span:
            span.set_attribute("governance.command_id", event["command_id"])
        wanted.discard(event["command_id"])
"""


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def span_of(path: Path, name: str, command_id: str) -> dict[str, Any]:
    found = [
        s
        for s in spans(path)
        if s["name"] == name and s["attributes"].get("governance.command_id") == command_id
    ]
    assert len(found) == 1, f"{len(found)} {name} spans for {command_id} in {path.name}"
    return found[0]


def wait_until(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def publish_blocked_broker_url(broker_url: str) -> Iterator[str]:
    """The test broker as a user who may do everything but publish outcome events."""
    with broker_user_who_cannot_publish_events(broker_url) as url:
        yield url


MODES = {"per-task": {"GOVERNANCE_BATCH_SIZE": "1"}, "batch": {"GOVERNANCE_BATCH_SIZE": "8"}}


@pytest.fixture(params=list(MODES))
def mode_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return MODES[request.param]


def traced_worker(
    database_url: str,
    broker_url: str,
    tmp_path: Path,
    name: str,
    mode_env: dict[str, str],
) -> WorkerProcess:
    worker = WorkerProcess(
        database_url,
        broker_url,
        concurrency=1,
        log_path=tmp_path / f"{name}.log",
        extra_env={
            "OTEL_TRACES_EXPORTER": "console",
            "GOVERNANCE_TRACES_FILE": str(tmp_path / f"{name}.spans"),
            "GOVERNANCE_RELAY_GRACE_SECONDS": "0.01",
            **mode_env,
        },
    )
    worker.wait_ready()
    return worker


def produce(
    database_url: str, broker_url: str, payloads: list[dict[str, Any]], path: Path | None
) -> None:
    """Send ``payloads`` from a producer process, its spans to ``path`` (None: no SDK)."""
    done = subprocess.run(
        [sys.executable, "-c", PRODUCER, broker_url, str(path or "")],
        input=json.dumps(payloads),
        cwd=PROJECT_ROOT,
        env=service_env(database_url, broker_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def relay_now(broker_url: str) -> None:
    """Have a worker run the relay now (beat would, on its schedule)."""
    with Celery(broker=broker_url, set_as_current=False) as client:
        client.conf.task_queues = [worker_queue(MAINTENANCE_QUEUE)]
        client.send_task(RELAY_OUTBOX_TASK, queue=MAINTENANCE_QUEUE)


def unpublished(database_url: str, command_id: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT published_at IS NULL FROM outbox_events WHERE command_id = %s", (command_id,)
        ).fetchone()
    return row is not None and bool(row[0])


def test_a_command_is_one_trace_from_producer_to_worker_to_subscriber_even_when_relayed(
    database_url: str,
    broker_url: str,
    publish_blocked_broker_url: str,
    tmp_path: Path,
    mode_env: dict[str, str],
) -> None:
    direct = sign(submit(new_id(), actor="tracer"))
    relayed = sign(submit(new_id(), actor="tracer"))
    subscriber_spans = tmp_path / "subscriber.spans"
    subscriber = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SUBSCRIBER,
            broker_url,
            str(subscriber_spans),
            direct["command_id"],
            relayed["command_id"],
        ],
        cwd=PROJECT_ROOT,
        env=service_env(database_url, broker_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert subscriber.stdout is not None and subscriber.stdout.readline().strip() == "ready"
        # Given a command applied by a worker that cannot publish its event...
        blocked = traced_worker(
            database_url, publish_blocked_broker_url, tmp_path, "blocked", mode_env
        )
        try:
            produce(database_url, broker_url, [relayed], tmp_path / "producer.spans")
            wait_until(lambda: unpublished(database_url, relayed["command_id"]), "the commit")
        finally:
            blocked.stop()
        # ...and one applied and published at once by a worker that can
        worker = traced_worker(database_url, broker_url, tmp_path, "worker", mode_env)
        try:
            produce(database_url, broker_url, [direct], tmp_path / "producer.spans")
            # When the relay publishes the first one
            relay_now(broker_url)
            subscriber.wait(timeout=90)
        finally:
            worker.stop()
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
    assert subscriber.returncode == 0, subscriber.stderr.read() if subscriber.stderr else ""

    worker_spans = {"direct": tmp_path / "worker.spans", "relayed": tmp_path / "blocked.spans"}
    for case, payload in (("direct", direct), ("relayed", relayed)):
        command_id = payload["command_id"]
        # Then the producer's span is the root of the command's trace
        sent = span_of(tmp_path / "producer.spans", "governance.send_command", command_id)
        assert sent["parent_id"] is None and sent["kind"] == "SpanKind.PRODUCER"
        # And the worker's span continues it, with what the command came to
        applied = span_of(worker_spans[case], "governance.apply_command", command_id)
        assert applied["context"]["trace_id"] == sent["context"]["trace_id"]
        assert applied["parent_id"] == sent["context"]["span_id"]
        assert {
            key: applied["attributes"].get(f"governance.{key}")
            for key in ("type", "request_id", "outcome", "revision")
        } == {
            "type": "submit",
            "request_id": payload["request_id"],
            "outcome": "applied",
            "revision": 1,
        }
        # And the subscriber's span for the event links to the worker's span
        handled = span_of(subscriber_spans, "governance.handle_event", command_id)
        assert [
            (link["context"]["trace_id"], link["context"]["span_id"]) for link in handled["links"]
        ] == [(applied["context"]["trace_id"], applied["context"]["span_id"])], case


def test_without_an_sdk_no_trace_header_travels(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a worker and a producer with no OpenTelemetry SDK configured
    payload = sign(submit(new_id(), actor="tracer"))
    worker = WorkerProcess(database_url, broker_url, concurrency=1, log_path=tmp_path / "w.log")
    worker.wait_ready()
    try:
        produce(database_url, broker_url, [payload], None)
        wait_until(
            lambda: (
                not unpublished(database_url, payload["command_id"])
                and _outbox_trace(database_url, payload["command_id"]) is not False
            ),
            "the outcome",
        )
    finally:
        worker.stop()
    # Then the outbox row carries no trace context
    assert _outbox_trace(database_url, payload["command_id"]) is None


def _outbox_trace(database_url: str, command_id: str) -> str | bool | None:
    """The row's trace context; False while there is no row."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT trace_context FROM outbox_events WHERE command_id = %s", (command_id,)
        ).fetchone()
    return False if row is None else row[0]
