"""The event log read in short pages: every event exactly once across commits that land out
of sequence order, per request in revision order, no transaction held between pages, and a
replay-then-live whose history spans many pages while writers keep committing."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
import pytest

from producer import GovernanceClient, Queries, replay
from producer.event_log import LogPage, LogPosition, catch_up, read_page
from producer.history import replay_outbox
from producer.queries import read_event_log
from tests.integration.helpers import PATIENCE
from tests.support.commands import command, new_id, submit
from tests.support.identities import Keyring
from tests.support.processes import WorkerProcess
from tests.support.signed import apply_command
from worker.transaction import StoredOutcome

pytestmark = pytest.mark.integration

APPLIED = "transition.applied"


def log_end(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(sequence), 0) FROM outbox_events").fetchone()
    assert row is not None
    return int(row[0])


def committed_submit(conn: psycopg.Connection[Any]) -> StoredOutcome:
    """A submit applied in a transaction of its own (``conn`` is autocommit)."""
    outcome = apply_command(conn, submit(new_id()))
    assert outcome.applied, outcome.event
    return outcome


def open_submit(conn: psycopg.Connection[Any]) -> StoredOutcome:
    """A submit applied inside a transaction left open on ``conn`` (not autocommit): its row
    holds a sequence but is invisible until ``conn.commit()``."""
    conn.execute("SELECT 1")  # open the transaction, so the apply runs inside it
    outcome = apply_command(conn, submit(new_id()))
    assert outcome.applied, outcome.event
    return outcome


def sequences(events: Iterable[dict[str, Any]]) -> list[int]:
    return [int(e["sequence"]) for e in events]


def caught_up(
    conn: psycopg.Connection[Any], position: LogPosition, page_size: int
) -> tuple[list[dict[str, Any]], LogPosition]:
    """Every event after ``position`` committed before this call, and where that leaves off."""
    events: list[dict[str, Any]] = []
    for page in catch_up(conn, position, page_size=page_size):
        events += page.events
        position = page.position
    return events, position


def reader_backends(observer: psycopg.Connection[Any]) -> list[tuple[int, str, Any, Any]]:
    """(pid, state, xact_start, backend_xmin) of the backends of this database that last ran
    the log's paged query, the observer excepted."""
    rows = observer.execute(
        "SELECT pid, state, xact_start, backend_xmin FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND query LIKE %s",
        ("%pg_visible_in_snapshot(txid%",),
    ).fetchall()
    return [(int(r[0]), str(r[1]), r[2], r[3]) for r in rows]


def assert_holds_nothing(observer: psycopg.Connection[Any], pid: int) -> None:
    """The backend is idle, outside any transaction, and holds no snapshot back."""
    row = observer.execute(
        "SELECT state, xact_start, backend_xmin FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    assert row == ("idle", None, None)


# --------------------------------------------------------------------------- out of order


@pytest.mark.parametrize("page_size", [1, 2])
def test_a_commit_below_sequences_already_returned_comes_later_exactly_once(
    db: psycopg.Connection[Any], database_url: str, page_size: int
) -> None:
    # Given three committed events, then A writing the next sequence in a transaction it
    # keeps open, and B committing a sequence above A's
    since = log_end(db)
    before = [committed_submit(db).sequence for _ in range(3)]
    with (
        psycopg.connect(database_url) as a,
        psycopg.connect(database_url, autocommit=True) as reader,
    ):
        held = open_submit(a)
        after = committed_submit(db)
        assert before[-1] < held.sequence < after.sequence

        # When a reader pages through the log while A is still open
        while_open, position = caught_up(reader, LogPosition(since=since), page_size)
        # ...and again, A still open: nothing is new
        nothing, position = caught_up(reader, position, page_size)
        # ...then A commits and the reader resumes from where it stopped
        a.commit()
        resumed, position = caught_up(reader, position, page_size)
        final, _ = caught_up(reader, position, page_size)

    # Then the pages before the commit held everything but A's, without stepping over it:
    # A's event came once A committed, after B's with its larger sequence, and only once
    assert sequences(while_open) == [*before, after.sequence]
    assert nothing == []
    assert sequences(resumed) == [held.sequence]
    assert final == []


@pytest.mark.parametrize("page_size", [1, 2])
def test_a_commit_in_the_middle_of_a_paged_walk_is_neither_lost_nor_repeated(
    db: psycopg.Connection[Any], database_url: str, page_size: int
) -> None:
    # Given A holding the lowest new sequence open, and five later events committed
    since = log_end(db)
    with (
        psycopg.connect(database_url) as a,
        psycopg.connect(database_url, autocommit=True) as reader,
    ):
        held = open_submit(a)
        later = [committed_submit(db).sequence for _ in range(5)]

        # When the reader takes one page, A commits, and the reader goes on page by page
        first = replay_outbox(reader, since, page_size)
        a.commit()
        pages = [first]
        while len(pages) < 50 and not (pages[-1].caught_up and pages[-1].events == []):
            pages.append(replay_outbox(reader, pages[-1].position, page_size))

    # Then the walk gave the five committed events, then A's, each once, in pages of at most
    # the asked size
    returned = [s for page in pages for s in sequences(page.events)]
    assert sequences(first.events) == later[:page_size]
    assert returned == [*later, held.sequence]
    assert all(len(page.events) <= page_size for page in pages)


def test_events_at_or_below_the_starting_sequence_are_never_returned(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given A holding a sequence open below a starting point taken after B committed
    with (
        psycopg.connect(database_url) as a,
        psycopg.connect(database_url, autocommit=True) as reader,
    ):
        held = open_submit(a)
        committed_submit(db)
        since = log_end(db)
        a.commit()
        # When the log is read after that starting point
        newer = committed_submit(db)
        events, _ = caught_up(reader, LogPosition(since=since), 1)

    # Then A's late commit below it is not part of the read
    assert held.sequence < since
    assert sequences(events) == [newer.sequence]


# --------------------------------------------------------------------------- concurrency


def test_paging_while_writers_commit_out_of_order_gives_each_event_once_in_revision_order(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given ten requests, and four writers racing commands on them, each writer holding its
    # transaction open a little after some applies (so commits land out of sequence order
    # and writers wait on each other's row locks)
    since = log_end(db)
    requests = [committed_submit(db).event["request_id"] for _ in range(10)]
    # (the writers' actor registered first: a registry change waits for every guarded
    # transaction open at the time, the straggler's included)
    Keyring()["operator"]
    stop_at = time.monotonic() + PATIENCE
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(database_url) as conn:
                for _ in range(25):
                    request_id = rng.choice(requests)
                    conn.execute("SELECT 1")
                    row = conn.execute(
                        "SELECT revision FROM mutation_requests WHERE request_id = %s",
                        (request_id,),
                    ).fetchone()
                    assert row is not None
                    revision = int(row[0])
                    toggle = (
                        command("approve", request_id, revision)
                        if revision % 2
                        else command(
                            "move_to_pending",
                            request_id,
                            revision,
                            args={"pending_reason": "quota"},
                        )
                    )
                    apply_command(conn, toggle)
                    time.sleep(rng.choice([0, 0, 0.002, 0.01, 0.03]))
                    conn.commit()
                    if time.monotonic() > stop_at:
                        return
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    # ...and one transaction that writes first and commits only once the reader went past it
    with (
        psycopg.connect(database_url) as straggler,
        psycopg.connect(database_url, autocommit=True) as reader,
    ):
        held = open_submit(straggler)
        for writer in writers:
            writer.start()

        # When a reader pages through the log with pages of two while they write
        received: list[dict[str, Any]] = []
        position = LogPosition(since=since)
        committed_straggler = False
        while any(w.is_alive() for w in writers):
            page = read_page(reader, position, 2)
            received += page.events
            position = page.position
            if not committed_straggler and max(sequences(received), default=0) > held.sequence:
                straggler.commit()
                committed_straggler = True
            if page.caught_up:
                time.sleep(0.005)
        for writer in writers:
            writer.join()
        if not committed_straggler:
            straggler.commit()
        rest, _ = caught_up(reader, position, 2)
        received += rest

    # Then every event of the log above the start came exactly once, the straggler's after
    # events with larger sequences, and per request in revision order
    assert errors == []
    in_log = {
        int(r[0])
        for r in db.execute(
            "SELECT sequence FROM outbox_events WHERE sequence > %s", (since,)
        ).fetchall()
    }
    got = sequences(received)
    assert len(got) == len(set(got))
    assert set(got) == in_log
    assert got.index(held.sequence) > min(got.index(s) for s in got if s > held.sequence)
    revisions: dict[str, list[int]] = defaultdict(list)
    for event in received:
        if event["event_type"] == APPLIED:
            revisions[event["request_id"]].append(int(event["revision"]))
    assert set(requests) <= set(revisions)
    assert all(revs == list(range(1, len(revs) + 1)) for revs in revisions.values())
    assert sum(len(revs) for revs in revisions.values()) > len(requests) + 20


# --------------------------------------------------------------------------- no snapshot


def test_no_transaction_stays_open_between_pages(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given a log of nine new events
    since = log_end(db)
    expected = [committed_submit(db).sequence for _ in range(9)]

    # When an autocommit connection and an idle non-autocommit one page through it by twos
    for autocommit in (True, False):
        with psycopg.connect(database_url, autocommit=autocommit) as reader:
            pid = reader.info.backend_pid
            got: list[int] = []
            page: LogPage | None = None
            position = LogPosition(since=since)
            while page is None or not page.caught_up:
                page = read_page(reader, position, 2)
                got += sequences(page.events)
                position = page.position
                # Then between pages the reader's backend is idle, outside any transaction,
                # holding no snapshot back
                assert reader.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
                assert_holds_nothing(db, pid)
            assert got == expected

    # ...and the library's log reader, part way through a history of several pages
    history = read_event_log(database_url, since, batch_size=2)
    taken: list[int] = []
    try:
        for event in history:
            taken.append(int(event["sequence"]))
            backends = reader_backends(db)
            assert backends
            assert all(backend[1:] == ("idle", None, None) for backend in backends)
    finally:
        history.close()
    assert taken == expected


# --------------------------------------------------------------------------- replay + live


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(broker_url, database_url, signing_key=Keyring()) as governance:
        yield governance


def test_a_replay_whose_history_spans_many_pages_while_writers_commit_misses_nothing(
    client: GovernanceClient, database_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given the log's current end, 15 requests moved back and forth three times (60 events,
    # fifteen pages of four), and a writer that keeps moving them while the history is read
    since = Queries(database_url).last_sequence()
    requests = [new_id() for _ in range(15)]
    expected: set[str] = set()
    history_started = threading.Event()
    writer_error: list[BaseException] = []

    def move(round_: int) -> None:
        toggle = client.approve if round_ % 2 else client.move_to_pending
        extra: dict[str, Any] = {} if round_ % 2 else {"pending_reason": "quota"}
        outcomes = client.send_all_and_wait(
            [toggle(r, expected_revision=round_, actor="w", **extra) for r in requests]
        )
        expected.update(e["event_id"] for e in outcomes if e)

    outcomes = client.send_all_and_wait(
        [
            client.submit(
                r,
                state_id="vm-1",
                state_type="vm",
                mutation_type="resize",
                intent={"operation_name": "resize"},
                actor="ci",
                pending_reason="manual_review",
            )
            for r in requests
        ]
    )
    expected.update(e["event_id"] for e in outcomes if e)
    for round_ in range(1, 4):
        move(round_)

    def write() -> None:
        try:
            assert history_started.wait(PATIENCE)
            for round_ in range(4, 8):
                move(round_)
        except BaseException as exc:  # reported by the assertion below
            writer_error.append(exc)

    writer = threading.Thread(target=write)
    writer.start()

    # When a subscriber replays from that point in pages of four, slowly, then follows live
    received: list[dict[str, Any]] = []
    with replay(database_url, client.broker_url, since, batch_size=4) as stream:
        deadline = time.monotonic() + 120  # guards against a hang only
        while time.monotonic() < deadline:
            if not writer.is_alive() and expected <= {e["event_id"] for e in received}:
                break
            event = stream.get(timeout=0.5)
            if event is None:
                continue
            received.append(event)
            if stream.replayed == len(received):
                # Still in the history: the reader holds no snapshot while we take our time
                history_started.set()
                backends = reader_backends(db)
                assert backends
                assert all(backend[1:] == ("idle", None, None) for backend in backends)
                time.sleep(0.02)
        history_part = stream.replayed
    writer.join()

    # Then every event arrived exactly once, the history took many pages and the live queue
    # gave the rest, and per request the revisions are in order
    assert writer_error == []
    ids = [e["event_id"] for e in received]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert len(expected) == 15 * 8
    assert 4 * 4 < history_part < len(received)
    revisions: dict[str, list[int]] = defaultdict(list)
    for event in received:
        revisions[event["request_id"]].append(event["revision"])
    assert all(revs == list(range(1, 9)) for revs in revisions.values())
