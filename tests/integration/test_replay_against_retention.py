"""A replay racing retention: a prune that commits at any point of a reader's page leaves the
reader either every event it asked for or the same clear refusal as a replay from below the
horizon — never a page with a silent hole where the pruned events were.

The interleaving is forced deterministically: the reader's connection commits a prune on
another connection right after the reader's k-th statement, for every k a page issues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

import psycopg
import pytest

from producer.event_log import EventsPruned, LogPosition, catch_up
from tests.conftest import migrated_database
from tests.support.commands import new_id, submit
from tests.support.signed import apply_command
from worker.outbox import mark_published
from worker.retention import RetentionPolicy, apply_retention

POLICY = RetentionPolicy(ledger_window=timedelta(days=30), log_retention=timedelta(days=30))
#: After each statement a first page issues (opening its band, then reading the page).
STATEMENT_POSITIONS = range(1, 3)


class PruneAfterStatement:
    """A reader's connection that runs ``prune`` (committed on another connection) right after
    the reader's ``k``-th statement."""

    def __init__(self, conn: psycopg.Connection[Any], k: int, prune: Callable[[], None]) -> None:
        self._conn = conn
        self._k = k
        self._prune = prune
        self.statements = 0

    @property
    def autocommit(self) -> bool:
        return self._conn.autocommit

    def cursor(self, **kwargs: Any) -> _Cursor:
        return _Cursor(self, self._conn.cursor(**kwargs))

    def executed(self) -> None:
        self.statements += 1
        if self.statements == self._k:
            self._prune()


class _Cursor:
    def __init__(self, owner: PruneAfterStatement, cursor: psycopg.Cursor[Any]) -> None:
        self._owner = owner
        self._cursor = cursor

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()

    def execute(self, *args: Any, **kwargs: Any) -> psycopg.Cursor[Any]:
        # The statement's rows are on the client once execute returns: the prune comes
        # strictly between this statement and the next.
        self._cursor.execute(*args, **kwargs)
        self._owner.executed()
        return self._cursor


@pytest.fixture
def db(postgres_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    with (
        migrated_database(postgres_server_url) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        yield conn


def old_published_events(db: psycopg.Connection[Any], count: int) -> set[int]:
    """``count`` events, published and aged past the log's retention: the next prune takes
    them. Returns their sequences."""
    sequences = {apply_command(db, submit(new_id())).sequence for _ in range(count)}
    mark_published(db, sorted(sequences))
    db.execute(
        "UPDATE outbox_events SET created_at = created_at - interval '40 days'"
        " WHERE sequence = ANY(%s)",
        [sorted(sequences)],
    )
    # The log is pruned only below the oldest ledger entry, which points at its event.
    db.execute(
        "UPDATE processed_commands SET processed_at = processed_at - interval '40 days',"
        " keep_until = keep_until - interval '40 days' WHERE event_sequence = ANY(%s)",
        [sorted(sequences)],
    )
    return sequences


def log_end(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT coalesce(max(sequence), 0) FROM outbox_events").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("k", STATEMENT_POSITIONS)
def test_a_prune_committing_after_any_statement_of_a_page_leaves_no_silent_hole(
    db: psycopg.Connection[Any], k: int
) -> None:
    # Given a reader starting just before three old events that retention may prune
    since = log_end(db)
    wanted = old_published_events(db, 3)
    # When a prune commits right after the reader's k-th statement
    pruned: list[int] = []
    reader = PruneAfterStatement(
        db, k, lambda: pruned.append(apply_retention(db, POLICY).log_events)
    )
    try:
        returned = {
            event["sequence"]
            for page in catch_up(cast(psycopg.Connection[Any], reader), LogPosition(since=since))
            for event in page.events
        }
    except EventsPruned as refused:
        # Then either the reader is told the log no longer starts where it asked
        assert pruned and pruned[0] > 0
        assert refused.after == since
        assert refused.pruned_through >= max(wanted)
    else:
        # Or it was given every event it asked for
        assert wanted <= returned
    # (and the prune did take them: the race was run, not avoided)
    assert pruned == [len(wanted)]
