"""Adaptive batches, the default: many commands per transaction, one savepoint per command.

Per-task mode (``GOVERNANCE_BATCH_SIZE=1``, every batch of one command) pays Celery's
per-message work, two database round trips, a commit (a WAL flush) and a publisher confirm
for every command. By default a
consumer step of the worker's main process takes what has arrived, up to
``GOVERNANCE_BATCH_SIZE`` command messages, each time its event loop is about to wait, runs
them through the same guarded transaction — two round trips and one commit for the whole
batch — publishes the events, and only then acknowledges the messages. Each command is still
decided against its request as locked and as the batch's earlier commands left it; a
rejection is a recorded outcome like any other. A quiet queue gives batches of one, applied
at once; a busy one gives large batches. The trade: commands of one batch commit together —
a crash before the commit redelivers all of them, none applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from governance.authentication import SIGNED, Trust
from worker.errors import InfrastructureError, translate
from worker.transaction import NotACommand, StoredOutcome, apply_commands

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Failed:
    """A command whose handler raised something unexpected; its savepoint was rolled back."""

    error: Exception


BatchResult = StoredOutcome | NotACommand | Failed


def apply_batch(
    conn: psycopg.Connection[Any], payloads: Sequence[object], trust: Trust = SIGNED
) -> list[BatchResult]:
    """Apply ``payloads`` in one guarded transaction; results in input order.

    If the transaction fails for anything but an infrastructure fault (a command that makes
    the handler raise, or the database refuse its data), each command is applied again in a
    transaction of its own, so one bad command fails alone. Infrastructure faults are raised:
    nothing was committed.
    """
    try:
        return list(apply_commands(conn, payloads, trust))
    except Exception as exc:
        fault = _classified(exc)
        if len(payloads) == 1:
            return [Failed(fault)]  # alone already (per-task mode is a batch of one)
        log.exception("a batch of %d failed; applying its commands one by one", len(payloads))
    results: list[BatchResult] = []
    for payload in payloads:
        try:
            results.extend(apply_commands(conn, [payload], trust))
        except Exception as exc:
            results.append(Failed(_classified(exc)))
    return results


def _classified(exc: Exception) -> Exception:
    """``exc`` as the worker's error tree names it (a driver error met outside the guarded
    transaction's own translation, say); infrastructure faults are raised."""
    fault = translate(exc)
    if isinstance(fault, InfrastructureError):
        if fault is exc:
            raise exc
        raise fault from exc
    return fault if isinstance(fault, Exception) else exc
