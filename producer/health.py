"""How a deployment is doing, read from the broker and the database: what ``governance
status`` reports, usable as a health check.

:func:`read_health` asks the workers (Celery's remote control: ``ping`` and
``active_queues``), the queues (a passive declare: depth and consumers, nothing created), the
outbox (unpublished events and the oldest one's age) and the periodic tasks' last runs, and
says what needs attention: no worker consuming the command queue, dead letters waiting, or an
outbox whose oldest unpublished event is older than a threshold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import kombu
import psycopg
from amqp.exceptions import AMQPError, NotFound
from celery import Celery

from governance.topology import (
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    MAINTENANCE_QUEUE,
    RETRY_QUEUE,
)

#: ``governance status`` exit code: something needs an operator's attention.
EXIT_NEEDS_ATTENTION = 8

#: The queues reported, in this order.
QUEUES = (COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE, DEAD_LETTER_QUEUE)

#: Periodic tasks whose last run is reported (see ``maintenance_runs``).
MAINTENANCE_TASKS = ("relay", "expiry")

OUTBOX = """
SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
FROM outbox_events WHERE published_at IS NULL
"""
LAST_RUNS = """
SELECT task, finished_at, extract(epoch FROM now() - finished_at)::float8, handled
FROM maintenance_runs
"""


class ServiceUnreachable(Exception):
    """The broker or the database cannot be reached or used; the message says which."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"cannot reach the {service}: {reason}")
        self.service = service


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue as the broker has it (``exists`` False: nobody declared it yet)."""

    name: str
    exists: bool
    messages: int
    consumers: int


@dataclass(frozen=True, slots=True)
class WorkerState:
    """A worker that answered, with the queues it consumes."""

    name: str
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskRun:
    """When a periodic task last finished (None: never) and what it handled then."""

    task: str
    finished_at: str | None
    age_seconds: float | None
    handled: int | None


@dataclass(frozen=True, slots=True)
class Health:
    """Everything ``governance status`` reports."""

    workers: tuple[WorkerState, ...]
    queues: tuple[QueueState, ...]
    unpublished_events: int
    oldest_unpublished_age_seconds: float | None
    last_runs: tuple[TaskRun, ...]
    #: What needs attention, one sentence each; empty when healthy.
    problems: tuple[str, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return not self.problems

    def queue(self, name: str) -> QueueState:
        return next(q for q in self.queues if q.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``governance status --json``."""
        document = asdict(self)
        document["healthy"] = self.healthy
        document["problems"] = list(self.problems)
        return document


def read_health(
    broker_url: str,
    database_url: str,
    *,
    max_outbox_age: float = 60.0,
    inspect_timeout: float = 1.0,
) -> Health:
    """Read the deployment's state; raises :class:`ServiceUnreachable`."""
    queues = tuple(queue_states(broker_url, QUEUES))
    workers = tuple(workers_seen(broker_url, inspect_timeout))
    unpublished, oldest, runs = outbox_state(database_url)
    health = Health(workers, queues, unpublished, oldest, tuple(runs))
    return replace(health, problems=tuple(problems(health, max_outbox_age)))


def problems(health: Health, max_outbox_age: float) -> list[str]:
    """What needs attention in ``health``."""
    found = []
    if health.queue(COMMANDS_QUEUE).consumers == 0:
        found.append(f"no worker is consuming {COMMANDS_QUEUE}")
    dead = health.queue(DEAD_LETTER_QUEUE).messages
    if dead:
        found.append(f"{dead} dead letter(s) on {DEAD_LETTER_QUEUE} (governance dead-letters list)")
    oldest = health.oldest_unpublished_age_seconds
    if oldest is not None and oldest > max_outbox_age:
        found.append(
            f"the oldest of {health.unpublished_events} unpublished event(s) is "
            f"{oldest:.0f}s old (threshold {max_outbox_age:g}s): is the relay running, can "
            "the workers publish?"
        )
    return found


def queue_states(broker_url: str, names: Sequence[str]) -> list[QueueState]:
    """Depth and consumers of each queue, by passive declaration (nothing is created)."""
    states = []
    try:
        with kombu.Connection(broker_url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            for name in names:
                try:
                    _, messages, consumers = channel.queue_declare(name, passive=True)
                    states.append(QueueState(name, True, messages, consumers))
                except NotFound:
                    # The broker closed the channel over the unknown queue.
                    channel = connection.channel()
                    states.append(QueueState(name, False, 0, 0))
    except (OSError, AMQPError, kombu.exceptions.KombuError, ConnectionError) as exc:
        raise ServiceUnreachable("broker", str(exc) or type(exc).__name__) from exc
    return states


def workers_seen(broker_url: str, timeout: float) -> list[WorkerState]:
    """The workers that answer a ping within ``timeout``, with the queues they consume."""
    app = Celery("governance-status", broker=broker_url, set_as_current=False)
    try:
        inspect = app.control.inspect(timeout=timeout)
        answered = inspect.active_queues() or {}
    except (OSError, AMQPError, kombu.exceptions.KombuError, ConnectionError) as exc:
        raise ServiceUnreachable("broker", str(exc) or type(exc).__name__) from exc
    finally:
        with contextlib.suppress(Exception):
            app.close()
    return [
        WorkerState(name, tuple(sorted(q.get("name", "") for q in queues or ())))
        for name, queues in sorted(answered.items())
    ]


def outbox_state(database_url: str) -> tuple[int, float | None, list[TaskRun]]:
    """Unpublished events, the oldest one's age, and the periodic tasks' last runs."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(OUTBOX).fetchone()
            recorded = {r[0]: r for r in conn.execute(LAST_RUNS).fetchall()}
    except psycopg.Error as exc:
        raise ServiceUnreachable("database", str(exc).strip().splitlines()[0]) from exc
    assert row is not None
    runs = []
    for task in MAINTENANCE_TASKS:
        if task in recorded:
            _, finished_at, age, handled = recorded[task]
            runs.append(TaskRun(task, _iso(finished_at), round(age, 3), handled))
        else:
            runs.append(TaskRun(task, None, None, None))
    oldest = None if row[1] is None else round(row[1], 3)
    return int(row[0]), oldest, runs


def _iso(value: datetime) -> str:
    return value.isoformat()
