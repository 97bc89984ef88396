"""The harness's two ends: a publisher (a separate process, so publishing never competes with
the subscriber for the interpreter) and collectors that timestamp each outcome.

Timestamps are ``time.monotonic()``, CLOCK_MONOTONIC on Linux: one clock for every process
on the machine, so a publish time taken in the publisher process and a receive time taken
here subtract correctly.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import resource
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import kombu

from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE, EVENTS_EXCHANGE


@dataclass
class Published:
    """What the publisher did: one monotonic publish time per message, in order."""

    times: list[float]
    cpu_seconds: float
    #: Worst lateness against the paced schedule (0 when publishing flat out).
    max_schedule_slip: float

    @property
    def rate(self) -> float | None:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return None
        return round((len(self.times) - 1) / (self.times[-1] - self.times[0]), 1)


def cpu_self() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: The baseline apps' queues (``bench.naive_app``, ``bench.noop_app``).
NAIVE_QUEUE = "bench.naive"
NOOP_QUEUE = "bench.noop"
BASELINE_QUEUES = (NAIVE_QUEUE, NOOP_QUEUE)


def publisher_app(broker_url: str) -> Any:
    """A plain Celery client, set up as the README tells one to be: it sends to
    ``governance.commands`` without declaring it (the workers declared it, quorum or classic,
    with arguments a client's default declaration would contradict), nor the baselines'
    queues, which their workers declare the same way."""
    from celery import Celery

    app = Celery("bench-publisher", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        task_queues=[
            kombu.Queue(name, no_declare=True) for name in (COMMANDS_QUEUE, *BASELINE_QUEUES)
        ],
    )
    return app


def _publish_main(
    broker_url: str,
    task_name: str,
    queue: str,
    payloads: list[Any],
    rate: float | None,
    results: Any,
) -> None:
    """Body of the publisher process: ``send_task`` without confirms, flat out or paced."""
    app = publisher_app(broker_url)
    times: list[float] = []
    slip = 0.0
    with app.producer_or_acquire() as producer:
        cpu_before = cpu_self()
        begin = time.monotonic()
        for index, payload in enumerate(payloads):
            if rate is not None:
                due = begin + index / rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                else:
                    slip = max(slip, -wait)
            times.append(time.monotonic())
            app.send_task(task_name, args=[payload], queue=queue, producer=producer)
        cpu = cpu_self() - cpu_before
    results.put(Published(times, cpu, slip))


class InlinePublisher:
    """Publishes from this process (for small bursts awaited one after another, e.g. the hot
    workload's rounds, where there is nothing to receive while publishing)."""

    def __init__(self, broker_url: str, *, task_name: str = APPLY_COMMAND_TASK) -> None:
        self.task_name = task_name
        self.app = publisher_app(broker_url)
        self._producer_context = self.app.producer_or_acquire()
        self.producer = self._producer_context.__enter__()

    def publish(self, payloads: list[Any], queue: str = COMMANDS_QUEUE) -> list[float]:
        """Send each payload; return the monotonic time of each send."""
        times = []
        for payload in payloads:
            times.append(time.monotonic())
            self.app.send_task(self.task_name, args=[payload], queue=queue, producer=self.producer)
        return times

    def close(self) -> None:
        self._producer_context.__exit__(None, None, None)


class PublisherProcess:
    """Publishes a list of task payloads from a spawned process; ``result()`` waits for it."""

    def __init__(
        self,
        broker_url: str,
        payloads: list[Any],
        *,
        task_name: str = APPLY_COMMAND_TASK,
        queue: str = COMMANDS_QUEUE,
        rate: float | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._results = context.Queue()
        self.process = context.Process(
            target=_publish_main,
            args=(broker_url, task_name, queue, payloads, rate, self._results),
            daemon=True,
        )
        self.process.start()

    def result(self, timeout: float) -> Published:
        try:
            published: Published = self._results.get(timeout=timeout)
        finally:
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
        return published


@dataclass
class Outcomes:
    """First arrival time and outcome kind of each awaited id, plus what else arrived."""

    received: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    unexpected: int = 0

    def kind_counts(self, ids: Iterable[str] | None = None) -> dict[str, int]:
        wanted = self.kinds if ids is None else {i: self.kinds[i] for i in ids if i in self.kinds}
        return dict(Counter(wanted.values()))


def outcome_kind(event: dict[str, Any]) -> str:
    """``applied`` or the rejection code of a governance outcome event."""
    if event.get("event_type") == "transition.applied":
        return "applied"
    rejection = event.get("rejection") or {}
    return str(rejection.get("code", "rejected"))


class Collector:
    """Base of the collectors: which ids are awaited, and when each first arrived."""

    def __init__(self) -> None:
        self.outcomes = Outcomes()
        self._awaited: set[str] = set()
        self._fresh: list[str] = []
        #: Called while waiting; raises when what should produce the outcomes has died.
        self.health: Callable[[], None] = lambda: None

    def expect(self, ids: Iterable[str]) -> None:
        self._awaited.update(ids)

    def _record(self, key: str, kind: str, at: float) -> None:
        if key in self.outcomes.received:
            self.outcomes.duplicates += 1
        elif key in self._awaited:
            self.outcomes.received[key] = at
            self.outcomes.kinds[key] = kind
            self._fresh.append(key)
        else:
            self.outcomes.unexpected += 1

    def _poll(self, timeout: float) -> None:
        raise NotImplementedError

    def wait_for(self, ids: Iterable[str], timeout: float, idle_timeout: float = 60.0) -> list[str]:
        """Receive until every id in ``ids`` has arrived, ``timeout`` passes, or nothing
        awaited arrives for ``idle_timeout``; return the ids still missing."""
        wanted = list(ids)
        self.expect(wanted)
        remaining = {i for i in wanted if i not in self.outcomes.received}
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        self._fresh.clear()
        while remaining:
            now = time.monotonic()
            left = min(deadline - now, last_progress + idle_timeout - now)
            if left <= 0:
                break
            self._poll(min(left, 0.5))
            self.health()
            if self._fresh:
                # Only what arrived since the last look is checked: linear in the ids overall.
                remaining.difference_update(self._fresh)
                self._fresh.clear()
                last_progress = time.monotonic()
        return [i for i in wanted if i in remaining]

    def close(self) -> None:
        """Release what the collector holds."""


class EventCollector(Collector):
    """A private, auto-deleted queue bound to an events exchange; one entry per command id.

    Bound before anything is published, so no outcome can slip past it.
    """

    def __init__(
        self,
        broker_url: str,
        exchange: str = EVENTS_EXCHANGE,
        binding: str = "transition.#",
        kind_of: Callable[[dict[str, Any]], str] = outcome_kind,
    ) -> None:
        super().__init__()
        self._kind_of = kind_of
        self.connection = kombu.Connection(broker_url)
        events = kombu.Exchange(exchange, type="topic", durable=True)
        channel = self.connection.channel()
        events.declare(channel=channel)
        queue = kombu.Queue(
            f"bench-events-{uuid.uuid4().hex[:8]}",
            events,
            routing_key=binding,
            exclusive=True,
            auto_delete=True,
        )
        self._consumer = kombu.Consumer(
            channel, [queue], callbacks=[self._on_message], accept=["json"], no_ack=True
        )
        self._consumer.consume()

    def _on_message(self, body: Any, message: Any) -> None:
        at = time.monotonic()
        event = json.loads(body) if isinstance(body, str | bytes) else body
        self._record(str(event.get("command_id")), self._kind_of(event), at)

    def _poll(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError, socket.timeout):
            self.connection.drain_events(timeout=timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.cancel()
        self.connection.release()


class DatagramCollector(Collector):
    """Completion signals of the baseline tasks: one UDP datagram per task, holding its id.

    A loopback datagram costs the task a few microseconds, far below any task's own cost,
    and needs no broker round trip, so it does not bend the baseline it measures.
    """

    def __init__(self) -> None:
        super().__init__()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.socket.bind(("127.0.0.1", 0))

    @property
    def address(self) -> str:
        host, port = self.socket.getsockname()
        return f"{host}:{port}"

    def _poll(self, timeout: float) -> None:
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(512)
        except TimeoutError:
            return
        at = time.monotonic()
        self.socket.setblocking(False)
        try:
            while True:
                self._record_datagram(data, at)
                try:
                    data = self.socket.recv(512)
                except BlockingIOError:
                    return
                at = time.monotonic()
        finally:
            self.socket.setblocking(True)

    def _record_datagram(self, data: bytes, at: float) -> None:
        key, _, kind = data.decode("utf-8", "replace").partition(" ")
        self._record(key, kind or "done", at)

    def close(self) -> None:
        self.socket.close()


def signal_done(address: str | None, key: str, kind: str = "done") -> None:
    """Tell the harness a baseline task finished (used inside the baseline apps)."""
    if not address:
        return
    host, _, port = address.rpartition(":")
    _signal_socket().sendto(f"{key} {kind}".encode(), (host, int(port)))


_socket: socket.socket | None = None


def _signal_socket() -> socket.socket:
    global _socket
    if _socket is None:
        _socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return _socket
