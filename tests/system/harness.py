"""What the reliability tests share: workers of the fault app, a confirming sender, the
workload, the dead-letter reader and the history check at the end of every test."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kombu
import psycopg

from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE
from producer.deadletters import DeadLetterQueue
from producer.history import DeadLetterRecord, check_history
from tests.support.celery_client import plain_client
from tests.support.commands import command, new_id, submit
from tests.support.events import EVENTS, EventListener
from tests.support.identities import sign
from tests.support.processes import WorkerProcess

FAULTS_APP = "tests.system.faults_app"


class Sender:
    """A plain Celery client that publishes with confirms and retries while the broker is
    away: the producer side of the guarantee."""

    def __init__(self, broker_url: str) -> None:
        self.app = plain_client(
            broker_url,
            broker_transport_options={"confirm_publish": True},
            task_serializer="json",
            broker_connection_retry=True,
        )
        self.sent: list[dict[str, Any]] = []

    def send(self, payloads: Iterable[dict[str, Any]], *, record: bool = True) -> None:
        with self.app.producer_or_acquire() as producer:
            for payload in map(sign, payloads):
                self.app.send_task(
                    APPLY_COMMAND_TASK,
                    args=[payload],
                    queue=COMMANDS_QUEUE,
                    producer=producer,
                    retry=True,
                    retry_policy={"max_retries": 30, "interval_start": 0.2, "interval_max": 1},
                )
                if record:
                    self.sent.append(payload)

    def send_resiliently(self, payloads: Iterable[dict[str, Any]], deadline: float = 120) -> None:
        """Send each command until the broker confirms it, re-sending the same command after
        any failure (the broker may be restarting): what a producer with confirms does."""
        stop = time.monotonic() + deadline
        for payload in map(sign, payloads):
            while True:
                try:
                    self.app.send_task(
                        APPLY_COMMAND_TASK,
                        args=[payload],
                        queue=COMMANDS_QUEUE,
                        retry=True,
                        retry_policy={"max_retries": 5, "interval_start": 0.2},
                    )
                    break
                except Exception:
                    if time.monotonic() > stop:
                        raise
                    time.sleep(0.3)
            self.sent.append(payload)

    @property
    def command_ids(self) -> list[str]:
        return list(dict.fromkeys(p["command_id"] for p in self.sent))

    def close(self) -> None:
        self.app.close()


class DurableEvents:
    """Like ``EventListener``, but on a durable queue and reconnecting: it survives a broker
    restart without losing an event published to it."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.queue = kombu.Queue(
            f"test-durable-events-{uuid.uuid4().hex[:8]}",
            EVENTS,
            routing_key="transition.#",
            durable=True,
            auto_delete=False,
        )
        self.events: list[dict[str, Any]] = []
        self._connection: kombu.Connection | None = None
        self._connect()

    def _connect(self) -> None:
        self._connection = kombu.Connection(self.broker_url, connect_timeout=3)
        self._connection.ensure_connection(max_retries=1)
        consumer = kombu.Consumer(
            self._connection.channel(), [self.queue], callbacks=[self._on], accept=["json"]
        )
        consumer.consume()

    def _on(self, body: Any, message: kombu.Message) -> None:
        self.events.append(json.loads(body) if isinstance(body, str | bytes) else body)
        message.ack()

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self._connection is None:
                    self._connect()
                assert self._connection is not None
                self._connection.drain_events(timeout=min(left, 0.2))
            except TimeoutError:
                continue
            except Exception:
                # The broker went away: reconnect (the durable queue kept our events).
                with contextlib.suppress(Exception):
                    if self._connection is not None:
                        self._connection.release()
                self._connection = None
                time.sleep(0.3)

    def of(self, command_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["command_id"] == command_id]

    def wait_for(
        self, command_ids: Iterable[str], timeout: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        wanted = set(command_ids)
        deadline = time.monotonic() + timeout
        while True:
            found = {e["command_id"]: e for e in self.events if e["command_id"] in wanted}
            if len(found) == len(wanted):
                return found
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(found))
                raise TimeoutError(f"{len(missing)} command(s) without an outcome: {missing[:5]}")
            self.drain(0.5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._connection is not None:
                self.queue(self._connection.channel()).delete()
                self._connection.release()


def start_workers(
    database_url: str,
    broker_url: str,
    log_dir: Path,
    *,
    count: int = 2,
    concurrency: int = 2,
    app: str = FAULTS_APP,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> list[WorkerProcess]:
    """``count`` worker processes (each with ``concurrency`` children), ready to consume."""
    workers = [
        WorkerProcess(
            database_url,
            broker_url,
            concurrency=concurrency,
            app=app,
            log_path=log_dir / f"worker-{i}-{time.monotonic_ns()}.log",
            extra_env={"GOVERNANCE_DB_POOL_SIZE": "2", **(env or {})},
            extra_args=("-n", f"w{i}-{time.monotonic_ns()}@%h", *extra_args),
        )
        for i in range(count)
    ]
    for worker in workers:
        worker.wait_ready()
    return workers


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    for worker in workers:
        worker.stop()


@contextlib.contextmanager
def workers_running(
    database_url: str, broker_url: str, log_dir: Path, **kwargs: Any
) -> Iterator[list[WorkerProcess]]:
    workers = start_workers(database_url, broker_url, log_dir, **kwargs)
    try:
        yield workers
    finally:
        stop_all(workers)


def workload(requests: int, prefix: str = "load") -> tuple[list[str], list[dict[str, Any]]]:
    """Submits for ``requests`` new requests, then two contenders per request racing on
    revision 1 (one is applied, the other loses with ``concurrency_conflict``, or is
    ``not_found`` when it overtakes its submit)."""
    request_ids = [new_id(prefix) for _ in range(requests)]
    payloads = [submit(r, initial_status="created") for r in request_ids]
    for request_id in request_ids:
        payloads.append(command("approve", request_id, 1))
        payloads.append(command("cancel", request_id, 1))
    return request_ids, payloads


def submitted(sender: Sender, events: EventListener, request_id: str) -> None:
    """Submit one request and wait until it exists (revision 1)."""
    payload = submit(request_id, initial_status="created")
    sender.send([payload])
    outcome = events.wait_for([payload["command_id"]], timeout=30)[payload["command_id"]]
    assert outcome["event_type"] == "transition.applied", outcome


def dead_letters(broker_url: str) -> list[DeadLetterRecord]:
    return [
        DeadLetterRecord(letter.command_id, letter.reason)
        for letter in DeadLetterQueue(broker_url).list()
    ]


def assert_history_clean(
    sender: Sender,
    events: EventListener,
    database_url: str,
    broker_url: str,
    *,
    with_dead_letters: bool = False,
) -> None:
    """The ledger check every reliability test ends with (workers stopped first)."""
    events.drain(0.5)
    check_history(
        commands=sender.sent,
        events=events.events,
        database_url=database_url,
        dead_letters=dead_letters(broker_url) if with_dead_letters else (),
        broker_url=broker_url,
    ).assert_clean()


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (an observable state, never a
    guess at how long something takes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def applied_count(database_url: str, command_id: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox_events "
            "WHERE command_id = %s AND event_type = 'transition.applied'",
            (command_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def waiting_on_lock(database_url: str) -> int:
    """How many backends of the test database are blocked on a row lock right now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])
