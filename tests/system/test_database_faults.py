"""A database that is down, frozen or partitioned away: every wait on it is bounded.

Each test runs against a private PostgreSQL on a TCP port of its own (never a shared server),
which it stops, starts or cuts off with the packet filter:

- with the server down, a command fails over to the broker within a few acquire timeouts,
  and a worker's warm shutdown is quick;
- a lock holder that froze in its transaction is ended by the server's
  ``idle_in_transaction_session_timeout``; the command waiting for its lock is then applied,
  never rejected;
- a partition (packets dropped, nothing refused) breaks a connection within the TCP bounds,
  a connection that died in it is discarded rather than handed out again, and once it heals
  real workers under a steady trickle of commands catch up within 30 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import errors as pg_errors

from tests.conftest import migrated_database
from tests.support import identities
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.processes import HANG_GUARD
from tests.support.services import unavailable
from tests.system.harness import (
    Sender,
    assert_history_clean,
    start_workers,
    stop_all,
    submitted,
    wait_until,
    waiting_on_lock,
    workers_running,
)
from tests.system.private_services import (
    Partition,
    PrivatePostgres,
    partition_problem,
    private_postgres,
)
from worker import database
from worker.config import Settings
from worker.errors import InfrastructureError
from worker.runtime import Runtime
from worker.transaction import StoredOutcome

#: How long the trickle test keeps the database partitioned away (a longer one by hand:
#: ``GOVERNANCE_TEST_PARTITION_SECONDS=60``).
PARTITION_SECONDS = float(os.environ.get("GOVERNANCE_TEST_PARTITION_SECONDS", "20"))
#: Every command sent must have its outcome this soon after the partition heals.
CATCH_UP_SECONDS = 30.0

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL on a TCP port of its own, shared by this module's tests."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(private_postgres(tcp=True))
        except pytest.skip.Exception as exc:
            unavailable(str(exc.msg))
        except Exception as exc:
            unavailable(f"cannot start a private PostgreSQL: {exc!r}")
        yield server


@pytest.fixture
def database_url(postgres: PrivatePostgres) -> Iterator[str]:
    """A migrated database of this test on the private server."""
    with migrated_database(postgres.url) as url:
        yield url


@pytest.fixture
def partition(postgres: PrivatePostgres) -> Iterator[Partition]:
    """The private server's port, ready to be cut off; always healed afterwards."""
    problem = partition_problem()
    if problem is not None:
        unavailable(problem)
    assert postgres.port is not None
    with Partition(postgres.port) as cut:
        yield cut


@pytest.fixture
def sender(broker_url: str) -> Iterator[Sender]:
    client = Sender(broker_url)
    yield client
    client.close()


@contextlib.contextmanager
def stopped(postgres: PrivatePostgres) -> Iterator[None]:
    """The private server down for the block; always started again afterwards."""
    postgres.stop()
    try:
        yield
    finally:
        postgres.start()


@contextlib.contextmanager
def runtime_of(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def a_submit() -> dict[str, Any]:
    """A signed submit (registered in the databases the run tracks), as a worker gets it."""
    return identities.sign(submit(new_id("dbfault"), initial_status="created"))


def fails_over_within(runtime: Runtime, bound: float) -> float:
    """Assert that a command on ``runtime`` raises ``InfrastructureError`` (the message goes
    back to the broker) within ``bound`` seconds; return how long it took."""
    started = time.monotonic()
    with pytest.raises(InfrastructureError):
        runtime.handle(a_submit())
    took = time.monotonic() - started
    assert took < bound, f"the command held its worker {took:.1f}s (bound {bound:.1f}s)"
    return took


def applied_within(runtime: Runtime, bound: float) -> StoredOutcome:
    """Assert that a command on ``runtime`` is applied at its first try, within ``bound``."""
    started = time.monotonic()
    stored = runtime.handle(a_submit())
    took = time.monotonic() - started
    assert stored.applied
    assert took < bound, f"the command took {took:.1f}s (bound {bound:.1f}s)"
    return stored


def established_to(port: int) -> int:
    """This process's TCP connections to ``port`` that the kernel still holds established."""
    return sum(
        1
        for sock in psutil.Process().net_connections(kind="tcp")
        if sock.raddr and sock.raddr.port == port and sock.status == psutil.CONN_ESTABLISHED
    )


def test_with_the_database_down_a_command_goes_back_to_the_queue_within_its_acquire_timeout(
    postgres: PrivatePostgres, database_url: str
) -> None:
    acquire = 2.0
    settings = Settings(
        database_url=database_url, broker_url="memory://", db_acquire_timeout=acquire
    )
    with runtime_of(settings) as warm:
        # Given a runtime whose pool holds a connection that has just served a command
        applied_within(warm, 3 * acquire)

        # When the server stops (the pooled connection dies with it)
        with stopped(postgres):
            # Then each command fails over to the broker within the bound, time and again
            took = [fails_over_within(warm, 3 * acquire) for _ in range(3)]
            # ...and so does one on a runtime that never had a connection
            with runtime_of(settings) as cold:
                took.append(fails_over_within(cold, 3 * acquire))
        print(f"\nwith the database down a command failed over in {max(took):.2f}s at most")

        # And once the server is back, commands are applied again by the same runtime
        def applied() -> StoredOutcome | None:
            with contextlib.suppress(InfrastructureError):
                return warm.handle(a_submit())
            return None

        assert wait_until(applied, 3 * acquire, "a command applied after the restart").applied


#: What a worker's log shows once it has taken the commands sent while the database is down:
#: per task, Celery's line for each received task (the one before the outage too); in
#: batches, the main process retrying its batch in process.
TAKEN = {
    "per-task": ({"GOVERNANCE_BATCH_SIZE": "1"}, "] received", 5),
    "batch": ({}, "infrastructure fault, retrying", 1),
}


@pytest.mark.parametrize("mode", sorted(TAKEN))
def test_with_the_database_down_a_worker_shuts_down_warm_within_a_bound(
    mode: str,
    postgres: PrivatePostgres,
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    mode_env, taken, times = TAKEN[mode]
    env = {"GOVERNANCE_DB_ACQUIRE_TIMEOUT": "2", **mode_env}
    (worker,) = start_workers(database_url, broker_url, tmp_path, count=1, app="worker", env=env)
    try:
        # Given a worker that has applied commands (it holds pooled connections)
        submitted(sender, events, new_id("before"))

        # When the server stops and commands keep arriving, and the worker takes them
        with stopped(postgres):
            payloads = [a_submit() for _ in range(4)]
            sender.send(payloads)
            assert worker.log_path is not None
            log_path = worker.log_path
            wait_until(
                lambda: log_path.read_text(errors="replace").count(taken) >= times,
                30,
                "the worker to take the commands",
            )
            # ...and the worker is told to stop (warm: it finishes what it is doing)
            started = time.monotonic()
            worker.process.send_signal(signal.SIGTERM)
            try:
                worker.process.wait(60)
            except Exception:
                worker.kill()
                raise
            took = time.monotonic() - started
            print(f"\nwarm shutdown with the database down took {took:.1f}s")
            # Then the worker has gone within the bound, and not by being killed
            assert worker.process.returncode == 0, log_path.read_text()[-3000:]
            assert took < 20.0, f"warm shutdown took {took:.1f}s"
    finally:
        stop_all([worker])

    # And the commands it held went back to the queue: a new worker applies every one
    with workers_running(database_url, broker_url, tmp_path, count=1, app="worker"):
        events.wait_for(sender.command_ids, timeout=60)
    assert_history_clean(sender, events, database_url, broker_url)


def test_a_lock_holder_frozen_in_its_transaction_is_ended_and_the_waiting_command_applied(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    tmp_path: Path,
) -> None:
    idle_timeout = 3.0
    env = {
        "GOVERNANCE_DB_IDLE_IN_TRANSACTION_TIMEOUT": str(idle_timeout),
        # Shorter than the holder's freeze: the waiter's lock waits expire and are retried.
        "GOVERNANCE_DB_LOCK_TIMEOUT": "1",
    }
    # A holder with the session settings of a worker under that environment: a frozen worker
    holder_settings = Settings(
        database_url=database_url, db_idle_in_transaction_timeout=idle_timeout
    )
    with workers_running(database_url, broker_url, tmp_path, count=1, app="worker", env=env):
        target = new_id("frozen")
        submitted(sender, events, target)
        approval = command("approve", target, 1)
        holder = psycopg.connect(database.conninfo(holder_settings))
        try:
            # Given the request's row locked by a session that is still working
            holder.execute(
                "SELECT 1 FROM mutation_requests WHERE request_id = %s FOR UPDATE", (target,)
            )
            # ...and an approval waiting for that lock
            sender.send([approval])

            last_statement = [time.monotonic()]

            def approval_waits() -> bool:
                # Each statement restarts the holder's idle clock: it is not frozen yet.
                holder.execute("SELECT 1")
                last_statement[0] = time.monotonic()
                return waiting_on_lock(database_url) >= 1

            wait_until(approval_waits, 30, "the approval to wait for the lock", interval=0.1)
            # When the holder freezes in its transaction (its idle clock runs from its last
            # statement, not from when the test saw the approval wait)
            frozen_at = last_statement[0]
            # Then the approval is applied, once the server has ended the frozen holder
            outcome = events.wait_for([approval["command_id"]], timeout=30)
            waited = time.monotonic() - frozen_at
            print(f"\nthe approval was applied {waited:.1f}s after its lock holder froze")
            assert outcome[approval["command_id"]]["event_type"] == "transition.applied"
            with pytest.raises(pg_errors.IdleInTransactionSessionTimeout):
                holder.execute("SELECT 1")
        finally:
            holder.close()

    # ...never rejected (a lock wait that expired was retried, not answered)
    assert {e["event_type"] for e in events.of(approval["command_id"])} == {"transition.applied"}
    assert waited >= idle_timeout - 0.5
    assert_history_clean(sender, events, database_url, broker_url)


def test_a_partition_breaks_connections_within_the_tcp_bounds_and_dead_ones_are_discarded(
    postgres: PrivatePostgres, database_url: str, partition: Partition
) -> None:
    assert postgres.port is not None
    port = postgres.port
    acquire = 3.0
    settings = Settings(
        database_url=database_url,
        broker_url="memory://",
        pool_size=1,
        db_acquire_timeout=acquire,
        db_connect_timeout=2,
        db_tcp_user_timeout=2,
        db_keepalives_idle=1,
        db_keepalives_interval=1,
        db_keepalives_count=2,
    )
    with runtime_of(settings) as runtime:
        # Given a runtime whose one pooled connection has just served a command
        applied_within(runtime, acquire)
        assert established_to(port) == 1

        # When the network drops every packet while the connection sits idle in the pool,
        # until keepalives have given up on it
        partition.cut()
        wait_until(lambda: established_to(port) == 0, 30, "keepalives to drop the connection")
        # ...and the network heals
        partition.heal()
        # Then the dead connection is not handed out: the next command is applied at once
        applied_within(runtime, acquire)

        # When the network drops every packet again, now under a command in progress
        partition.cut()
        # Then the command fails over to the broker within the bounds, as does the next one
        # (which finds no connection: the pool cannot make one)
        took = [fails_over_within(runtime, 3 * acquire) for _ in range(2)]
        print(f"\nin a partition a command failed over in {max(took):.2f}s at most")
        # And once it heals, commands are applied again
        partition.heal()

        def applied() -> StoredOutcome | None:
            with contextlib.suppress(InfrastructureError):
                return runtime.handle(a_submit())
            return None

        assert wait_until(applied, 3 * acquire, "a command applied after the heal").applied


def test_after_a_partition_heals_workers_under_a_trickle_of_commands_catch_up_within_30s(
    database_url: str,
    broker_url: str,
    events: EventListener,
    sender: Sender,
    partition: Partition,
    tmp_path: Path,
) -> None:
    # Real workers with the default bounds (the harness's pool of two per child)
    with workers_running(database_url, broker_url, tmp_path, app="worker"):
        # Given a steady trickle of commands, three a second (a submit and two rivals)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                request_id = new_id("trickle")
                sender.send(
                    [
                        submit(request_id, initial_status="created"),
                        command("approve", request_id, 1),
                        command("cancel", request_id, 1),
                    ]
                )
                stop.wait(1.0)

        def answered(wanted: set[str]) -> bool:
            events.drain(0.1)
            return len(wanted) > 0 and wanted <= {e["command_id"] for e in events.events}

        producer = threading.Thread(target=trickle, daemon=True)
        producer.start()
        try:
            wait_until(lambda: answered({p["command_id"] for p in sender.sent[:6]}), 30, "a flow")

            # When the database is partitioned away for a while, and then the network heals
            partition.cut()
            partition_ends = time.monotonic() + PARTITION_SECONDS
            while time.monotonic() < partition_ends:
                events.drain(0.5)
            partition.heal()
            healed_at = time.monotonic()
            backlog = {payload["command_id"] for payload in list(sender.sent)}

            # Then what was sent until the heal is answered (the trickle going on meanwhile)
            wait_until(lambda: answered(backlog), CATCH_UP_SECONDS, "the backlog", interval=0)
            caught_up = time.monotonic() - healed_at
        finally:
            stop.set()
            producer.join(30)
        assert not producer.is_alive()
        # ...and so has every command the trickle sent while the backlog was caught up (each
        # within the same bound, counted from the trickle's end rather than from the heal:
        # one sent a moment before the backlog cleared gets as long as any other)
        events.wait_for(sender.command_ids, timeout=CATCH_UP_SECONDS)
        print(
            f"\n{len(sender.command_ids)} commands ({len(backlog)} before the heal); after a "
            f"{PARTITION_SECONDS:.0f}s partition the workers caught up {caught_up:.1f}s after "
            f"the heal"
        )

    # And the history is clean: one outcome each, nothing applied twice, nothing left behind
    assert_history_clean(sender, events, database_url, broker_url)
