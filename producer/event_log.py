"""The event log (the outbox table) read in bounded pages: gap-free, each event exactly once.

A reader that walks the log with "everything above the last sequence I saw" loses events:
sequences are handed out at insert but become visible at commit, so while one transaction
holds sequence 41 uncommitted another may already have committed 42, and a reader that moves
past 42 never sees 41. Reading everything in one long snapshot avoids that, but holds back
vacuum for as long as the reader takes. Here every page is one short statement (no
transaction stays open between pages), and the position handed back from a page,
:class:`LogPosition`, resumes exactly where the page stopped.

How a position is kept, and why no event falls through:

The reader walks the log in *bands*. A band is fixed by a snapshot ``S`` taken when the band
is opened: it holds the events whose writing transaction is committed in ``S`` and was not
in the snapshot of the band before (``covered``). Events are returned band after band, each
band in sequence order, paged by a sequence keyset (``band_after``).

- A band is a fixed, finite set: whether a transaction is committed in a given snapshot never
  changes, so the same band query asked later returns the same rows (rows are deleted from
  the log only below its retention horizon, see below). A keyset over a fixed set misses
  nothing and repeats nothing, however much is committed between its pages; a transaction
  still open at ``S`` is simply not in the band.
- The bands partition the log: a transaction committed in one snapshot is committed in every
  later one, so each event belongs to exactly one band, the first whose snapshot sees its
  commit. An event held back from a band (its writer was still open, or had not started)
  lands in the next band opened after its commit, whatever its sequence: a late commit of
  sequence 41 is returned after 42, once, instead of being stepped over.
- Per request, revision order is kept: a request's events are written under its row lock,
  so the writer of revision ``n + 1`` inserts only after the writer of ``n`` committed. Any
  snapshot that sees the later commit sees the earlier one, so revision ``n`` is in the same
  band (where its smaller sequence comes first) or an earlier one.
- Completeness is exact: once a band is walked to its end, every event committed when its
  snapshot was taken has been returned. That is the seam a replay-then-live subscriber needs
  (see :func:`catch_up`).

Why the ``txid`` column of ``outbox_events`` is needed (and nothing else reads it): "was this
row's writer committed in snapshot ``S``?" is decided by ``pg_visible_in_snapshot(txid, S)``
on the writer's full 64-bit transaction id, which ``txid`` records at insert
(``pg_current_xact_id()``). The system column ``xmin`` cannot stand in for it: it is a 32-bit
id that wraps around, is replaced by a frozen marker when vacuum freezes the row, and is not
comparable with a ``pg_snapshot``. The ``(txid, sequence)`` index serves the later bands,
whose rows all have ``txid >= pg_snapshot_xmin(covered)``.

Retention deletes published events past the horizon, oldest first, and records the highest
sequence it may have deleted (``log_horizon``) in the same transaction. A reader in its first
band whose position is below that would be handed a log with a hole where the pruned events
were: it is refused with :class:`EventsPruned` instead. The horizon is read by the very
statement that reads the page, so both see one snapshot: a prune that commits while a reader
pages is either wholly seen by a page's statement (the horizon moved, so the reader is refused)
or not at all (its rows are still there) — never a page that lacks the pruned rows under a
horizon that predates them. A later band's rows were committed after the band before it was
complete, long after anything retention deletes.

The position's size is bounded by the number of transactions open at its snapshots (their
ids are listed in the snapshot text), not by how much has been read. A transaction left open
for a long time does not stop the reader, but the later bands' index range starts at the
oldest transaction open at ``covered``, so each page of a later band scans what has been
written since that transaction began.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from governance.events import with_sequence

_OPEN_BAND = "SELECT pg_current_snapshot()::text"


class EventsPruned(LookupError):
    """The log no longer holds the events asked for: those up to ``pruned_through`` are past
    the retention horizon."""

    def __init__(self, after: int, pruned_through: int) -> None:
        super().__init__(
            f"events up to sequence {pruned_through} are past the log's retention horizon; "
            f"cannot replay from sequence {after + 1} (start at {pruned_through + 1} or later)"
        )
        self.after = after
        self.pruned_through = pruned_through


# The first band: every committed event above the position's sequence (walked by primary key),
# beside the log's retention horizon read in the same statement, hence the same snapshot. The
# horizon row (no sequence) comes first whether or not the page holds any event.
_FIRST_BAND = """
SELECT coalesce((SELECT pruned_through FROM log_horizon WHERE log = 'outbox'), 0), NULL::bigint,
       NULL::jsonb
UNION ALL (
    SELECT NULL, sequence, body FROM outbox_events
    WHERE sequence > %(after)s
      AND txid < pg_snapshot_xmax(%(band)s::pg_snapshot)
      AND pg_visible_in_snapshot(txid, %(band)s::pg_snapshot)
    ORDER BY sequence
    LIMIT %(limit)s
)
ORDER BY 2 NULLS FIRST
"""

# A later band: events committed in ``band`` and not in ``covered``. Their writers were open
# or not yet started at ``covered``, so their ids are at least its xmin: that bound lets the
# (txid, sequence) index find them without walking the whole log.
_LATER_BAND = """
SELECT sequence, body FROM outbox_events
WHERE sequence > %(after)s
  AND txid >= pg_snapshot_xmin(%(covered)s::pg_snapshot)
  AND txid < pg_snapshot_xmax(%(band)s::pg_snapshot)
  AND pg_visible_in_snapshot(txid, %(band)s::pg_snapshot)
  AND NOT pg_visible_in_snapshot(txid, %(covered)s::pg_snapshot)
ORDER BY sequence
LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class LogPosition:
    """Where a reader of the log stands: what it has been given so far.

    Start with ``LogPosition(since=n)`` (every event with ``sequence > n``) and pass the
    position of each :class:`LogPage` to the next :func:`read_page`. The snapshots are
    ``pg_snapshot`` text (``xmin:xmax:xip,...``), so a position can be stored and used from
    another connection or process (on the same server: snapshots of a replica differ).

    - ``since``: events with ``sequence <= since`` are never returned, even one committed
      late;
    - ``covered``: every event (above ``since``) committed in this snapshot has been
      returned; None until the first band is complete;
    - ``band``: the snapshot of the band being walked (the events committed in it and not in
      ``covered``); None between bands;
    - ``band_after``: in that band, every event with ``sequence <= band_after`` has been
      returned.
    """

    since: int = 0
    covered: str | None = None
    band: str | None = None
    band_after: int = 0


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of the log: its events and the position to resume from.

    ``events`` are the stored bodies plus their ``sequence``. ``caught_up`` is True when this
    page finished a band: every event committed when ``position.covered`` was taken has now
    been returned. A page can be empty and still move the position on.
    """

    events: list[dict[str, Any]]
    position: LogPosition
    caught_up: bool


def read_page(conn: psycopg.Connection[Any], position: LogPosition, limit: int = 1_000) -> LogPage:
    """The next at most ``limit`` events after ``position``, and the position after them.

    Each statement runs on its own snapshot and nothing is held open afterwards: on an
    autocommit connection each statement is its own transaction; on an idle connection the
    page runs in a transaction of its own, committed before returning. (Inside a transaction
    the caller opened, the page joins it, and ends when the caller ends it.)
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if conn.autocommit:
        return _read_page(conn, position, limit)
    with conn.transaction():
        return _read_page(conn, position, limit)


def _read_page(conn: psycopg.Connection[Any], position: LogPosition, limit: int) -> LogPage:
    with conn.cursor(row_factory=tuple_row) as cursor:
        band, after = position.band, max(position.band_after, position.since)
        if band is None:
            # Opening a band only takes a snapshot: the band is whatever is committed in it,
            # read by this and later statements through pg_visible_in_snapshot, so it does
            # not matter that they run on later snapshots of their own.
            opened = cursor.execute(_OPEN_BAND).fetchone()
            assert opened is not None
            band, after = str(opened[0]), position.since
        params = {
            "after": after,
            "band": band,
            "covered": position.covered,
            # One more than asked, to know whether the band ends on this page.
            "limit": limit + 1,
        }
        query = _FIRST_BAND if position.covered is None else _LATER_BAND
        # Not prepared: a custom plan sees the snapshot bounds and picks the right index.
        rows = cursor.execute(query, params, prepare=False).fetchall()
        if position.covered is None:
            (pruned_through, _, _), *rows = rows
            if after < pruned_through:
                raise EventsPruned(after, int(pruned_through))
            rows = [row[1:] for row in rows]
    finished = len(rows) <= limit
    rows = rows[:limit]
    events = [with_sequence(_as_mapping(body), int(sequence)) for sequence, body in rows]
    if finished:
        following = LogPosition(since=position.since, covered=band, band_after=position.since)
    else:
        following = LogPosition(position.since, position.covered, band, int(rows[-1][0]))
    return LogPage(events, following, finished)


def catch_up(
    conn: psycopg.Connection[Any], position: LogPosition, *, page_size: int = 1_000
) -> Iterator[LogPage]:
    """Pages from ``position`` until every event committed before the first page was read
    has been given (the pages are read lazily, as they are asked for).

    It stops after the page that finishes a band opened here (a band the position was
    already walking is finished first): that band's snapshot was taken once the iteration
    had begun, so it sees every commit that came before. Events committed meanwhile may be
    returned too; events committed after that snapshot are left for the next read.
    """
    opened_here = position.band is None
    while True:
        page = read_page(conn, position, page_size)
        yield page
        if page.caught_up and opened_here:
            return
        opened_here = opened_here or page.caught_up
        position = page.position


def connect_reader(database_url: str) -> psycopg.Connection[Any]:
    """A read-only autocommit connection for paging the log: each page is its own statement
    and transaction, so the connection holds no snapshot between pages."""
    conn = psycopg.connect(database_url, autocommit=True)
    try:
        conn.execute("SET default_transaction_read_only = on")
    except BaseException:
        conn.close()
        raise
    return conn


def _as_mapping(body: Any) -> Mapping[str, Any]:
    # jsonb arrives decoded unless the connection was configured to load it as text.
    loaded = json.loads(body) if isinstance(body, str | bytes) else body
    assert isinstance(loaded, Mapping)
    return loaded
