"""Retention: how long the idempotency ledger and the event log keep what they hold.

Two tables grow with every command: the ledger (``processed_commands``, one row per command
id) and the outbox, which is also the event log subscribers replay. Each is pruned in small
batches, each batch its own short transaction, so pruning never holds a lock for long nor
stands in a command's way:

- the ledger forgets a command once it is older than the **idempotency window** (the window
  the worker had when it recorded the command, kept on the entry as ``keep_until``, and for a
  signed command never before it is too old to be accepted; the database refuses to delete
  an entry before its ``keep_until``). A re-send
  after that is judged as a new command, and the revision guard answers it: a stale
  ``expected_revision`` is a ``concurrency_conflict``, a re-sent ``submit`` is
  ``already_exists``. Nothing is applied twice; only the original outcome is no longer
  replayed.
- the log drops *published* events older than the **retention horizon** (never an event
  still waiting for the broker). Every ledger row points at its outcome event, so the horizon
  is never shorter than the window, and a run prunes the log only below the oldest ledger row
  left. The highest sequence pruned is kept in ``log_horizon``: a reader asking to replay from
  below it is told so (:class:`producer.event_log.EventsPruned`).

Decisions, their chain and the signed proofs of commands are never pruned: the history of a
request is kept for as long as the request exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

#: The ledger's entries past the instant each was to be kept until (set when it was written:
#: the window then, or longer for a command issued ahead of the clock), soonest first,
#: through the ``keep_until`` index. The database refuses to delete any other.
_PRUNE_LEDGER = """
WITH doomed AS (
    SELECT namespace, command_id FROM processed_commands
    WHERE keep_until <= now()
    ORDER BY keep_until
    LIMIT %(batch_size)s
)
DELETE FROM processed_commands
WHERE (namespace, command_id) IN (SELECT namespace, command_id FROM doomed)
"""

#: The oldest row the ledger keeps: the log must keep that row's event.
_OLDEST_LEDGER_ROW = "SELECT min(processed_at) FROM processed_commands"

#: The first event of the log at or past the cutoff: pruning walks the primary key below it
#: only, so a batch that finds few rows to delete never scans the rest of the log.
_FIRST_KEPT = """
SELECT coalesce(
    (SELECT sequence FROM outbox_events WHERE created_at >= %(cutoff)s ORDER BY sequence LIMIT 1),
    (SELECT coalesce(max(sequence), 0) + 1 FROM outbox_events)
)
"""

_PRUNE_LOG = """
WITH doomed AS (
    SELECT sequence FROM outbox_events
    WHERE sequence < %(below)s AND created_at < %(cutoff)s AND published_at IS NOT NULL
    ORDER BY sequence
    LIMIT %(batch_size)s
), deleted AS (
    DELETE FROM outbox_events WHERE sequence IN (SELECT sequence FROM doomed)
    RETURNING sequence
), horizon AS (
    INSERT INTO log_horizon (log, pruned_through, pruned_at)
    SELECT 'outbox', max(sequence), now() FROM deleted HAVING count(*) > 0
    ON CONFLICT (log) DO UPDATE
    SET pruned_through = greatest(log_horizon.pruned_through, excluded.pruned_through),
        pruned_at = excluded.pruned_at
)
SELECT count(*) FROM deleted
"""

_CLOCK = "SELECT now()"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each table keeps its rows; None keeps them forever.

    ``ledger_window`` None keeps the ledger whole; otherwise retention forgets the entries
    past their ``keep_until``, which the worker set when it recorded them (from the window it
    had then: :attr:`governance.authentication.Trust.ledger_window`).
    ``log_retention`` shorter than ``ledger_window`` would leave ledger rows pointing at
    events that are gone: it is refused.
    """

    ledger_window: timedelta | None = timedelta(days=30)
    log_retention: timedelta | None = timedelta(days=30)
    #: Rows deleted per statement (one short transaction each).
    batch_size: int = 5_000
    #: Batches per table per run, so that one run is bounded; the next run goes on.
    max_batches: int = 100

    def __post_init__(self) -> None:
        if self.log_retention is not None and (
            self.ledger_window is None or self.log_retention < self.ledger_window
        ):
            raise ValueError(
                "the log's retention must be at least the ledger's idempotency window "
                "(every ledger row points at its event)"
            )


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """What one run pruned."""

    ledger_rows: int
    log_events: int
    #: Whether a table still had rows past its limit when the run stopped at ``max_batches``.
    unfinished: bool


def apply_retention(conn: psycopg.Connection[Any], policy: RetentionPolicy) -> RetentionRun:
    """Prune the ledger, then the log, in batches of their own transactions.

    ``conn`` must be in autocommit mode: each batch commits on its own. Both cutoffs are taken
    from one reading of the database clock, the log's never later than the ledger's.
    """
    if not conn.autocommit:
        raise ValueError("apply_retention needs an autocommit connection")
    now = _scalar(conn, _CLOCK, {})
    ledger_rows, ledger_unfinished = 0, False
    if policy.ledger_window is not None:
        ledger_rows, ledger_unfinished = _in_batches(conn, _PRUNE_LEDGER, {}, policy)
    log_events, log_unfinished = 0, False
    if policy.log_retention is not None:
        cutoff = now - policy.log_retention
        oldest_kept: datetime | None = _scalar(conn, _OLDEST_LEDGER_ROW, {})
        if oldest_kept is not None:
            # A ledger row and its event are written by one transaction, with one clock:
            # an event older than every ledger row is no ledger row's.
            cutoff = min(cutoff, oldest_kept)
        below = _scalar(conn, _FIRST_KEPT, {"cutoff": cutoff})
        log_events, log_unfinished = _in_batches(
            conn, _PRUNE_LOG, {"cutoff": cutoff, "below": below}, policy, counted=True
        )
    return RetentionRun(ledger_rows, log_events, ledger_unfinished or log_unfinished)


def _in_batches(
    conn: psycopg.Connection[Any],
    statement: str,
    params: dict[str, Any],
    policy: RetentionPolicy,
    *,
    counted: bool = False,
) -> tuple[int, bool]:
    """Run a pruning statement until a batch comes back short; (rows, stopped early)."""
    total = 0
    for _ in range(policy.max_batches):
        cursor = conn.execute(statement, {**params, "batch_size": policy.batch_size})
        deleted = _first(cursor) if counted else cursor.rowcount
        total += deleted
        if deleted < policy.batch_size:
            return total, False
    return total, True


def _first(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.fetchone()
    return 0 if row is None else int(row[0])


def _scalar(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> Any:
    row = conn.execute(statement, params).fetchone()
    return None if row is None else row[0]
