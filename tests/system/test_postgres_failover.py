"""PostgreSQL failover: the primary dies, its synchronous standby is promoted, nothing is lost.

Each test runs a private primary and streaming standby (``private_postgres_pair``), and the
workers are given both of them in one URL with ``target_session_attrs=read-write``, so they
connect to whichever node takes writes:

- with a synchronous standby, a primary killed outright under hundreds of commands in flight,
  its standby promoted and the old primary rebuilt as the new one's standby, the same workers
  reconnect by themselves and the history is clean: every command one outcome, none applied
  twice (the ledger survived the failover), nothing left unpublished;
- a worker given both nodes in a URL that does not say which will do still connects only to
  the one that takes writes;
- with a synchronous standby that cannot confirm, a commit is not acknowledged at all;
- with an asynchronous standby that lags, a commit the primary acknowledged is gone after
  the failover: what synchronous replication is for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from governance.topology import COMMANDS_QUEUE
from tests.support import identities
from tests.support.commands import new_id, submit
from tests.support.events import EventListener
from tests.support.policies import apply_policy
from tests.support.processes import HANG_GUARD
from tests.support.services import unavailable
from tests.support.signed import apply_command
from tests.system.harness import (
    Sender,
    assert_history_clean,
    start_workers,
    stop_all,
    wait_until,
    workload,
)
from tests.system.private_postgres_pair import PostgresPair, pair_problem
from tests.system.private_postgres_pair import postgres_pair as started_pair
from worker import database
from worker.config import Settings
from worker.migrate import migrate

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

DATABASE = "governance"
#: Requests of the failover test's load: three commands each.
LOAD_REQUESTS = 150

PairFactory = Callable[..., contextlib.AbstractContextManager[PostgresPair]]


@pytest.fixture(scope="module")
def postgres_pairs() -> Iterator[PairFactory]:
    """Starts private primary-and-standby pairs for this module's tests (each its own):
    skipped where they cannot be started, failed when the services are required."""
    problem = pair_problem()
    if problem is not None:
        unavailable(problem)

    @contextlib.contextmanager
    def pair(*, synchronous: bool = True) -> Iterator[PostgresPair]:
        with contextlib.ExitStack() as stack:
            try:
                started = stack.enter_context(started_pair(synchronous=synchronous))
            except Exception as exc:
                unavailable(f"cannot start a PostgreSQL primary and standby: {exc}")
            yield started

    yield pair


@pytest.fixture(scope="module")
def steady_pair(postgres_pairs: PairFactory) -> Iterator[PostgresPair]:
    """One synchronous pair, its database migrated, for the tests that leave it as it was."""
    with postgres_pairs() as pair, migrated_on_primary(pair):
        yield pair


@pytest.fixture
def sender(broker_url: str) -> Iterator[Sender]:
    client = Sender(broker_url)
    # The commands queue is the worker's to declare (a quorum queue, with its arguments): a
    # plain Celery client only sends to it.
    client.app.conf.task_queues = [kombu.Queue(COMMANDS_QUEUE, no_declare=True)]
    yield client
    client.close()


@contextlib.contextmanager
def migrated_on_primary(pair: PostgresPair) -> Iterator[str]:
    """The service's database created and migrated on the primary; the failover URL of
    it, where the tests' actors are registered as they sign."""
    with psycopg.connect(pair.primary.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    migrate(pair.primary.url(DATABASE))
    apply_policy(pair.primary.url(DATABASE))
    url = pair.failover_url(DATABASE)
    identities.track(url)
    try:
        yield url
    finally:
        identities.untrack(url)


def outcomes_beyond(events: EventListener, count: int) -> bool:
    events.drain(0.1)
    return len(events.events) >= count


def request_exists(url: str, request_id: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM mutation_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
    assert row is not None
    return int(row[0]) == 1


def standby_flushed(pair: PostgresPair) -> bool:
    """Whether the standby has flushed everything the primary has written."""
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT flush_lsn >= pg_current_wal_lsn() FROM pg_stat_replication "
            "WHERE application_name = %s",
            (pair.standby.name,),
        ).fetchone()
    return row is not None and bool(row[0])


def test_pg_basebackup_names_the_standby_in_its_primary_conninfo(
    steady_pair: PostgresPair,
) -> None:
    assert f"application_name={steady_pair.standby.name}" in steady_pair.primary_conninfo()
    assert steady_pair.replication_state() == "sync"


def test_a_worker_given_both_nodes_without_session_attributes_connects_only_to_the_primary(
    steady_pair: PostgresPair,
) -> None:
    # Given a URL that lists the standby first and does not say which node will do
    url = (
        f"postgresql://postgres@127.0.0.1:{steady_pair.standby.port},"
        f"127.0.0.1:{steady_pair.primary.port}/{DATABASE}"
    )
    # When a worker connects with it
    with psycopg.connect(database.conninfo(Settings(database_url=url))) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    # Then its session is on the node that takes writes
    assert row == (False,)


def test_a_primary_killed_mid_stream_fails_over_to_its_synchronous_standby_losing_nothing(
    postgres_pairs: PairFactory,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    with postgres_pairs() as pair, migrated_on_primary(pair) as database_url:
        relay_env = {"GOVERNANCE_RELAY_INTERVAL": "1", "GOVERNANCE_RELAY_GRACE_SECONDS": "0.5"}
        beat = ("-B", "--schedule", str(tmp_path / "beat-schedule"))
        workers = [
            *start_workers(database_url, broker_url, tmp_path, count=1, app="worker"),
            *start_workers(
                database_url,
                broker_url,
                tmp_path,
                count=1,
                app="worker",
                env=relay_env,
                extra_args=beat,
            ),
        ]
        pids = [worker.pid for worker in workers]
        try:
            # Given hundreds of commands in flight on workers given both nodes' addresses
            _, load = workload(LOAD_REQUESTS, prefix="failover")
            sender.send(load[:300])
            wait_until(lambda: outcomes_beyond(events, 60), 60, "outcomes to flow")

            # When the primary's postmaster is killed outright, and its standby promoted
            pair.kill_primary()
            killed_at = time.monotonic()
            answered_before = len({e["command_id"] for e in events.events})
            pair.promote()
            promoted_in = time.monotonic() - killed_at
            sender.send(load[300:])
            # ...and the failed primary rebuilt as the new primary's synchronous standby (until
            # then no commit on the new primary is acknowledged: none is on one node only)
            pair.clone(pair.primary, upstream=pair.standby)
            rebuilt_in = time.monotonic() - killed_at

            # Then every command gets its outcome, from the same workers (never restarted)
            events.wait_for(sender.command_ids, timeout=90)
            recovered_in = time.monotonic() - killed_at
            assert [worker.pid for worker in workers] == pids
            assert all(worker.process.poll() is None for worker in workers)
        finally:
            stop_all(workers)
        print(
            f"\n{answered_before} of {len(load)} commands answered before the kill; standby "
            f"promoted {promoted_in:.1f}s, the old primary rebuilt as its standby "
            f"{rebuilt_in:.1f}s, and every command answered {recovered_in:.1f}s after the kill"
        )
        assert answered_before < len(load) == len(sender.sent)
        # ...on the promoted standby, now the primary, the old primary its standby
        assert pair.in_recovery(pair.standby) is False
        assert pair.in_recovery(pair.primary) is True

        # And the history is clean: one outcome each, none applied twice, none unpublished
        assert_history_clean(sender, events, database_url, broker_url)


def waiting_for_the_standby(url: str) -> bool:
    """Whether a backend of the database waits for a synchronous standby's confirmation."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event = 'SyncRep'"
        ).fetchone()
    return row is not None and int(row[0]) > 0


def test_with_a_synchronous_standby_a_commit_it_has_not_confirmed_is_not_acknowledged(
    steady_pair: PostgresPair,
) -> None:
    pair = steady_pair
    # (Signed first: signing registers the actor, itself a commit on the primary.)
    payload = identities.sign(submit(new_id("unconfirmed"), initial_status="created"))
    acknowledged = threading.Event()
    failures: list[BaseException] = []

    def apply() -> None:
        try:
            with psycopg.connect(pair.primary.url(DATABASE), autocommit=True) as conn:
                apply_command(conn, payload)
            acknowledged.set()
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    # Given a standby that receives nothing (its WAL receiver stopped)
    with pair.walreceiver_frozen():
        # When a command is applied on the primary
        client = threading.Thread(target=apply, daemon=True)
        client.start()
        # Then its commit waits for the standby's confirmation, unacknowledged
        wait_until(
            lambda: waiting_for_the_standby(pair.primary.url(DATABASE)) or failures,
            60,
            "the commit to wait for the standby",
        )
        assert not failures and not acknowledged.is_set()
    # And it is, as soon as the standby has the commit
    assert acknowledged.wait(30.0), failures
    client.join(10)


def test_with_an_asynchronous_standby_a_commit_the_primary_acknowledged_is_lost_in_failover(
    postgres_pairs: PairFactory,
) -> None:
    with postgres_pairs(synchronous=False) as pair, migrated_on_primary(pair):
        primary_url = pair.primary.url(DATABASE)
        replicated, acknowledged = new_id("replicated"), new_id("acknowledged")
        with psycopg.connect(primary_url, autocommit=True) as conn:
            apply_command(conn, submit(replicated, initial_status="created"))
        wait_until(lambda: standby_flushed(pair), 30, "the standby to catch up")

        # Given an asynchronous standby that lags (its WAL receiver stopped)
        with pair.walreceiver_frozen() as receiver:
            # When the primary acknowledges a command as applied
            with psycopg.connect(primary_url, autocommit=True) as conn:
                stored: Any = apply_command(conn, submit(acknowledged, initial_status="created"))
            assert stored.applied
            assert not standby_flushed(pair)
            # ...and then dies, and the standby is promoted (what the receiver never read
            # dies with it)
            pair.kill_primary()
            receiver.kill()
            receiver.wait(10)
        pair.wait_answering(pair.standby)
        pair.promote()

        # Then the promoted standby has the earlier command, but not the acknowledged one:
        # its outcome was announced, and a redelivery would now apply it a second time
        standby_url = pair.standby.url(DATABASE)
        assert request_exists(standby_url, replicated)
        assert not request_exists(standby_url, acknowledged)
