"""Fixtures for the real services: one database per test run, one broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.environment import drop_service_settings

# Before any of the service's modules is imported: some read their settings at import.
drop_service_settings(os.environ)

import kombu  # noqa: E402
import psycopg  # noqa: E402
import pytest  # noqa: E402

from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_QUEUE, RETRY_QUEUE  # noqa: E402
from tests.support import identities  # noqa: E402
from tests.support.events import EventListener  # noqa: E402
from tests.support.processes import WorkerProcess  # noqa: E402
from tests.support.services import (  # noqa: E402
    find_broker,
    find_postgres,
    fresh_database,
    unavailable,
)
from worker.migrate import migrate  # noqa: E402
from worker.outbox import EventPublisher  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server's maintenance-database URL."""
    found = find_postgres()
    if found.url is None:
        unavailable(found.reason)
    try:
        yield found.url  # type: ignore[misc]
    finally:
        found.close()


@contextmanager
def migrated_database(server_url: str) -> Iterator[str]:
    """A new database on ``server_url``, migrated to the newest schema, the actors of the
    tests registered in it as they sign; dropped afterwards."""
    with fresh_database(server_url) as url:
        migrate(url)
        identities.track(url)
        try:
            yield url
        finally:
            identities.untrack(url)


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test run, migrated to the newest schema, dropped afterwards."""
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A RabbitMQ URL; the command and dead-letter queues start empty."""
    found = find_broker()
    if found.url is None:
        unavailable(found.reason)
    assert found.url is not None
    purge_queues(found.url)
    try:
        yield found.url
    finally:
        found.close()


def purge_queues(
    broker_url: str, names: tuple[str, ...] = (COMMANDS_QUEUE, RETRY_QUEUE, DEAD_LETTER_QUEUE)
) -> None:
    with kombu.Connection(broker_url) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_purge(name)
            except Exception:  # the queue does not exist yet; reopen the closed channel
                channel = conn.channel()


@pytest.fixture
def publisher(broker_url: str) -> Iterator[EventPublisher]:
    """The worker's event publisher, on the test broker."""
    publisher = EventPublisher(broker_url)
    try:
        yield publisher
    finally:
        publisher.close()


@pytest.fixture
def events(broker_url: str) -> Iterator[EventListener]:
    """Every outcome event published while the test runs."""
    listener = EventListener(broker_url)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture(scope="module")
def running_worker(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real ``celery -A worker worker`` process on the test database, for one module."""
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    worker = WorkerProcess(database_url, broker_url, concurrency=2, log_path=log_path)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
