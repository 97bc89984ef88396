"""Shared helpers of the integration tests: reading the ledger back, real synchronisation
points between connections, and processes that apply or send commands on a barrier."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kombu
import psycopg

from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE
from tests.support.celery_client import plain_client
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.signed import apply_command
from worker.outbox import EventPublisher
from worker.transaction import StoredOutcome

#: How long a test waits for something that should happen at once before it fails.
PATIENCE = 30.0


# --------------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class RequestRow:
    status: str
    revision: int


def request_row(conn: psycopg.Connection[Any], request_id: str) -> RequestRow:
    """The request's status and revision as committed."""
    row = conn.execute(
        "SELECT status, revision FROM mutation_requests WHERE request_id = %s", (request_id,)
    ).fetchone()
    assert row is not None, f"request {request_id} does not exist"
    return RequestRow(str(row[0]), int(row[1]))


def decisions_after(
    conn: psycopg.Connection[Any], request_id: str, revision: int, category: str | None = None
) -> list[tuple[int, str, str, str]]:
    """(revision, category, type, command_id) of the decisions written after ``revision``."""
    rows = conn.execute(
        "SELECT revision, category, type, command_id FROM request_decisions "
        "WHERE request_id = %s AND revision > %s AND (%s::text IS NULL OR category = %s) "
        "ORDER BY revision, position",
        (request_id, revision, category, category),
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def count(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def ledger_snapshot(conn: psycopg.Connection[Any], request_id: str) -> dict[str, Any]:
    """Everything a command can change about a request, to compare before and after."""
    return {
        "row": request_row(conn, request_id),
        "decisions": count(
            conn, "SELECT count(*) FROM request_decisions WHERE request_id = %s", (request_id,)
        ),
        "ledger": count(
            conn, "SELECT count(*) FROM processed_commands WHERE request_id = %s", (request_id,)
        ),
        "outbox": count(
            conn, "SELECT count(*) FROM outbox_events WHERE request_id = %s", (request_id,)
        ),
    }


def submitted(conn: psycopg.Connection[Any], **submit_args: Any) -> str:
    """A new request, submitted through the guarded path (revision 1); its id."""
    request_id = new_id()
    outcome = apply_command(conn, submit(request_id, **submit_args))
    assert outcome.applied, outcome.event
    return request_id


def pending(conn: psycopg.Connection[Any], **submit_args: Any) -> str:
    """A new request pending for manual review, at revision 1."""
    return submitted(conn, initial_status="pending", **submit_args)


def code_of(outcome: StoredOutcome | dict[str, Any]) -> str | None:
    """The rejection code of an outcome, None when it was applied."""
    event = outcome.event if isinstance(outcome, StoredOutcome) else outcome
    rejection = event.get("rejection")
    return None if rejection is None else str(rejection["code"])


# --------------------------------------------------------------------------- real syncs


def wait_until(condition: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll a condition of the outside world (a lock queue, a queue's contents)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.01)


def wait_for_lock_waiters(
    observer: psycopg.Connection[Any], backend_pids: list[int], timeout: float = PATIENCE
) -> None:
    """Return once every backend in ``backend_pids`` is blocked waiting for a lock."""

    def all_blocked() -> bool:
        blocked = count(
            observer,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
            (backend_pids,),
        )
        return blocked == len(backend_pids)

    wait_until(all_blocked, f"backends {backend_pids} to wait on a lock", timeout)


@contextmanager
def row_lock_held(database_url: str, request_id: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold the request's row lock (as a competing transaction would) until the block ends,
    then commit."""
    with psycopg.connect(database_url) as holder:
        holder.execute(
            "SELECT revision FROM mutation_requests WHERE request_id = %s FOR UPDATE",
            (request_id,),
        )
        yield holder
        holder.commit()


class Racer(threading.Thread):
    """A thread that runs one call on its own connection and keeps its result or error."""

    def __init__(
        self,
        database_url: str,
        call: Callable[[psycopg.Connection[Any]], Any],
        barrier: threading.Barrier | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.backend_pid = self.conn.info.backend_pid
        self._call = call
        self._barrier = barrier
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self._barrier is not None:
                self._barrier.wait(PATIENCE)
            self.result = self._call(self.conn)
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()

    def outcome(self) -> Any:
        """Join and return the result, re-raising the thread's error."""
        self.join(PATIENCE)
        assert not self.is_alive(), "racer did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def applying(payload: dict[str, Any]) -> Callable[[psycopg.Connection[Any]], StoredOutcome]:
    """The call that applies ``payload``, signed now: registering its actor on first use is a
    registry change, which waits for every guarded transaction in flight (a racer blocked on
    it would never be seen waiting on the request's lock)."""
    signed = sign(payload)
    return lambda conn: apply_command(conn, signed)


# --------------------------------------------------------------------------- processes


def apply_in_process(
    database_url: str,
    payloads: list[dict[str, Any]],
    start: Any,
    results: Any,
) -> None:
    """Process body: connect, wait for everyone at ``start``, apply each payload in turn, and
    put (command_id, event_type, code, sequence) per command on ``results``."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        start.wait(PATIENCE)
        for payload in payloads:
            outcome = apply_command(conn, payload)
            results.put(
                (
                    payload["command_id"],
                    outcome.event["event_type"],
                    code_of(outcome),
                    outcome.sequence,
                )
            )


def send_in_process(
    broker_url: str, payloads: list[dict[str, Any]], start: Any, results: Any
) -> None:
    """Process body: a plain Celery client that sends ``payloads`` once everyone is ready, and
    puts each sent command_id on ``results``."""
    client = plain_client(broker_url)
    with client.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        start.wait(PATIENCE)
        for payload in payloads:
            client.send_task(
                APPLY_COMMAND_TASK,
                args=[sign(payload)],
                queue=COMMANDS_QUEUE,
                connection=connection,
            )
            results.put(payload["command_id"])


def run_processes(
    target: Callable[[str, list[dict[str, Any]], Any, Any], None],
    url: str,
    payloads: list[dict[str, Any]],
    processes: int,
) -> list[Any]:
    """Split ``payloads`` over ``processes`` spawned processes released together by a
    barrier; return what they put on their results queue (one item per payload).

    The payloads are signed here first: a spawned process does not know the test databases,
    so it could not register an actor that signs for the first time."""
    payloads = [sign(payload) for payload in payloads]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    shares = [payloads[i::processes] for i in range(processes)]
    workers = [
        context.Process(target=target, args=(url, share, start, results)) for share in shares
    ]
    for process in workers:
        process.start()
    collected: list[Any] = []
    try:
        while len(collected) < len(payloads):
            collected.append(results.get(timeout=PATIENCE * 2))
    finally:
        for process in workers:
            process.join(PATIENCE)
    assert all(process.exitcode == 0 for process in workers)
    return collected


# --------------------------------------------------------------------------- the broker


class Sender:
    """A plain Celery client, as any producer would use."""

    def __init__(self, broker_url: str) -> None:
        self.client = plain_client(broker_url)

    def send(self, *args: Any, **options: Any) -> None:
        self.client.send_task(
            APPLY_COMMAND_TASK, args=[sign(a) for a in args], queue=COMMANDS_QUEUE, **options
        )

    def close(self) -> None:
        self.client.close()


def send_and_wait(sender: Sender, events: EventListener, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one command and return its outcome event."""
    sender.send(payload)
    return events.wait_for([payload["command_id"]], timeout=PATIENCE)[payload["command_id"]]


def wait_for_events(
    listener: EventListener,
    condition: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout: float = PATIENCE,
) -> None:
    """Drain the listener until ``condition`` holds for the events received so far."""
    deadline = time.monotonic() + timeout
    while not condition(listener.events):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        listener.drain(0.1)


def chain(request_id: str, first_revision: int, length: int) -> list[dict[str, Any]]:
    """``length`` commands alternating approve / move_to_pending from ``first_revision``."""
    payloads = []
    for step in range(length):
        revision = first_revision + step
        if step % 2 == 0:
            payloads.append(command("approve", request_id, revision))
        else:
            payloads.append(
                command("move_to_pending", request_id, revision, args={"pending_reason": "quota"})
            )
    return payloads


def get_all(broker_url: str, queue_name: str) -> list[kombu.Message]:
    """Take every message now in ``queue_name``."""
    taken = []
    with kombu.Connection(broker_url) as connection:
        queue = kombu.Queue(queue_name, routing_key=queue_name, channel=connection.channel())
        while (message := queue.get(no_ack=True)) is not None:
            taken.append(message)
    return taken


def flush(listener: EventListener, publisher: EventPublisher) -> None:
    """Return once everything ``publisher`` published so far has reached ``listener``.

    A queue keeps the order of one channel's messages, so a marker published last arrives
    last: once it is in, so is everything before it.
    """
    marker = new_id("flush")
    publisher.publish({"event_id": str(uuid.uuid4()), "command_id": marker}, "transition.flush")
    wait_for_events(
        listener, lambda events: any(e["command_id"] == marker for e in events), "the marker"
    )


# --------------------------------------------------------------------------- raw sends


def send_raw(sender: Sender, payload: dict[str, Any]) -> None:
    """Publish ``payload`` exactly as given (no signing on the way)."""
    sender.client.send_task(APPLY_COMMAND_TASK, args=[payload], queue=COMMANDS_QUEUE)


def answers(
    events: EventListener, command_id: str, actor_id: str, at_least: int = 1
) -> list[dict[str, Any]]:
    """The outcome events naming ``command_id`` and ``actor_id``, once there are
    ``at_least``."""

    def mine(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e
            for e in seen
            if e["command_id"] == command_id and (e.get("actor") or {}).get("id") == actor_id
        ]

    wait_for_events(
        events, lambda seen: len(mine(seen)) >= at_least, f"{at_least} answer(s) to {command_id}"
    )
    return mine(events.events)


def database_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]
