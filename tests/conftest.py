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
from hypothesis import HealthCheck, settings  # noqa: E402

from governance.topology import (  # noqa: E402
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    MAINTENANCE_QUEUE,
    RETRY_QUEUE,
)
from tests.support import identities  # noqa: E402
from tests.support.events import EventListener  # noqa: E402
from tests.support.policies import OPEN_POLICY, apply_policy  # noqa: E402
from tests.support.processes import WorkerProcess  # noqa: E402
from tests.support.services import (  # noqa: E402
    find_broker,
    find_postgres,
    fresh_database,
    unavailable,
)
from worker import event_signing  # noqa: E402
from worker.migrate import migrate  # noqa: E402
from worker.outbox import EventPublisher  # noqa: E402

# The guarded transaction run in this process signs its events as the tests' workers do
# (their key is registered in every database the tests migrate).
event_signing.install(identities.worker_key())

# Property tests judge behaviour, never speed: a loaded machine (three test processes on two
# cores) must not turn a slow example into a failure. In CI the examples are derived from
# each test's name, so a run is repeatable; by hand they are random, to find new cases.
settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("ci", settings.get_profile("suite"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "suite")


def pytest_configure(config: pytest.Config) -> None:
    """The coverage floor is the whole suite's: a run of part of it (``pytest tests/unit``,
    ``-k``, ``-m``) reports coverage but is not failed for measuring less of the code."""
    if _whole_suite(config):
        return
    coverage = config.pluginmanager.getplugin("_cov")
    if coverage is not None and getattr(coverage, "options", None) is not None:
        coverage.options.cov_fail_under = 0


def _whole_suite(config: pytest.Config) -> bool:
    tests = Path(__file__).resolve().parent
    named = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args]
    return (
        all(path == tests for path in named)
        and not config.option.keyword
        and not config.option.markexpr
        and not config.getoption("deselect", None)
        and not config.getoption("lf", False)
    )


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
def migrated_database(
    server_url: str, policy: str | None = OPEN_POLICY, *, auth: str = "signed"
) -> Iterator[str]:
    """A new database on ``server_url``, migrated to the newest schema in trust mode ``auth``
    (``governance migrate --auth``; only workers of that ``GOVERNANCE_AUTH`` start on it),
    under ``policy`` (the tests' open approval policy by default; None: none applied, as
    ``governance migrate`` leaves it), the actors of the tests registered in it as they
    sign; dropped afterwards."""
    with fresh_database(server_url) as url:
        migrate(url, auth=auth)
        if policy is not None:
            apply_policy(url, policy)
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


@pytest.fixture(scope="session")
def development_database_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test run migrated in development mode (``governance migrate --auth
    off``): the one a worker with ``GOVERNANCE_AUTH=off`` starts on."""
    with migrated_database(postgres_server_url, auth="off") as url:
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
    broker_url: str,
    names: tuple[str, ...] = (COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE, DEAD_LETTER_QUEUE),
) -> None:
    """Empty ``names`` (by default every queue a worker reads, and the dead letters): what an
    earlier test left there, maintenance runs included, would be taken by the next test's
    workers and counted in its figures."""
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
