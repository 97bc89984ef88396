"""The per-process composition root: one connection pool and one publisher per process.

Created lazily on first use in the process that uses it, so a prefork child never inherits
its parent's sockets.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from governance.authentication import Policy, Trust
from governance.parking import ParkReason
from worker import batching, database, deadletter, expiry, outbox, retention, sql
from worker.config import Settings
from worker.errors import InfrastructureError, translate
from worker.transaction import NotACommand, StoredOutcome

log = logging.getLogger(__name__)


class Runtime:
    """What a worker process needs to apply commands and publish their outcomes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: ConnectionPool[psycopg.Connection[Any]] = database.create_pool(settings)
        self.publisher = outbox.EventPublisher(settings.broker_url)
        self.trust = Trust(
            signed=settings.auth == "signed",
            policy=Policy(
                settings.audience,
                timedelta(seconds=settings.max_command_age),
                settings.webauthn_origins,
            ),
            policy_required=settings.approval_policy == "required",
            ledger_window=settings.retention_policy().ledger_window,
        )

    def handle(self, payload: object) -> StoredOutcome:
        """Apply one command (a batch of one) and publish its outcome, for callers outside
        the delivery pipeline. Raises ``NotACommand``, ``InfrastructureError`` or what the
        command itself made fail."""
        (result,) = self.handle_batch([payload])
        if isinstance(result, NotACommand):
            raise result
        if isinstance(result, batching.Failed):
            raise result.error
        return result

    def handle_batch(self, payloads: list[object]) -> list[batching.BatchResult]:
        """Apply a batch of commands (one, in per-task mode) in one transaction, then publish
        their outcomes. Raises ``InfrastructureError`` (nothing of the batch committed)."""
        try:
            with self.pool.connection() as conn:
                results = batching.apply_batch(conn, payloads, self.trust)
                outbox.publish_outcomes(
                    conn, self.publisher, [r for r in results if isinstance(r, StoredOutcome)]
                )
        except psycopg.Error as exc:
            raise translate(exc) from exc
        return results

    def expire_due(self) -> int:
        """One expiry sweep; returns how many requests it expired."""
        try:
            with self.pool.connection() as conn:
                outcomes = expiry.expire_due(
                    conn,
                    batch_size=self.settings.expiry_batch_size,
                    signed=self.trust.signed,
                    ledger_window=self.trust.ledger_window,
                )
                outbox.publish_outcomes(conn, self.publisher, outcomes)
        except psycopg.Error as exc:
            raise translate(exc) from exc
        return sum(1 for stored in outcomes if stored.applied and not stored.replayed)

    def relay(self) -> int:
        """One outbox sweep; returns how many events it published."""
        try:
            with self.pool.connection() as conn:
                return outbox.relay_unpublished(
                    conn, self.publisher, grace_seconds=self.settings.relay_grace_seconds
                )
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def apply_retention(self) -> retention.RetentionRun:
        """One retention run over the ledger and the event log."""
        try:
            with self.pool.connection() as conn:
                return retention.apply_retention(conn, self.settings.retention_policy())
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def dead_letter(
        self, letter: deadletter.Letter, reason: ParkReason, headers: dict[str, Any] | None = None
    ) -> None:
        """Park a message on the dead-letter queue; raises ``InfrastructureError`` when the
        broker cannot take it (the message then goes back to its queue)."""
        log.error("dead-lettering message (%s): %s", reason.cause.value, reason.text)
        try:
            deadletter.publish(self.publisher, letter, reason, headers or {})
        except Exception as exc:
            raise InfrastructureError(f"cannot dead-letter: {exc}") from exc

    def count_lost_delivery(self, key: str) -> int:
        """Record one more delivery of a message that was delivered before without completing;
        return how many there have been. Raises ``InfrastructureError``."""
        try:
            with self.pool.connection() as conn:
                row = conn.execute(sql.COUNT_DELIVERY, {"message_key": key}).fetchone()
        except psycopg.Error as exc:
            raise translate(exc) from exc
        assert row is not None
        return int(row[0])

    def forget_delivery(self, key: str) -> None:
        """The delivery completed; a failure to record that only leaves a count to clear."""
        try:
            with self.pool.connection() as conn:
                conn.execute(sql.FORGET_DELIVERY, {"message_key": key})
        except psycopg.Error as exc:
            log.warning("could not clear the delivery count of %s: %s", key, exc)

    def close(self) -> None:
        self.pool.close()
        self.publisher.close()


_lock = threading.Lock()
_runtime: Runtime | None = None
_runtime_pid: int | None = None


def current(settings: Settings | None = None) -> Runtime:
    """This process's runtime, created on first use (after any fork)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = Runtime(settings or Settings.from_env())
            _runtime_pid = os.getpid()
        return _runtime


def reset() -> None:
    """Forget this process's runtime (closing it if it is ours)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is not None and _runtime_pid == os.getpid():
            _runtime.close()
        _runtime, _runtime_pid = None, None
