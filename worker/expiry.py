"""Expiry: pending requests whose deadline has passed, by the database clock, become expired.

Each one goes through the guarded transaction as an ``expire`` command from the ``system``
actor, inside one sweep transaction that holds the claimed rows (``FOR UPDATE SKIP LOCKED``):
two sweepers never claim the same request, and a command racing the sweep either waits for
the sweep's commit (and loses with ``concurrency_conflict``) or holds the row and is skipped.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg

from governance.authentication import DEFAULT_LEDGER_WINDOW, Trust
from governance.codec import actor_to_dict
from governance.model import SYSTEM_ACTOR
from worker import sql
from worker.transaction import StoredOutcome, apply_commands

_EXPIRY_NAMESPACE = uuid.UUID("5a1e7c1e-0000-4e00-8000-000000e0c0de")


def expire_command(request_id: str, revision: int) -> dict[str, Any]:
    """The expire command for a request at a revision.

    Its ``command_id`` is derived from both, so sweepers that meet the same due request
    issue the very same command and the ledger applies it once.
    """
    return {
        "command_id": f"expire-{uuid.uuid5(_EXPIRY_NAMESPACE, f'{request_id}@{revision}')}",
        "type": "expire",
        "request_id": request_id,
        "expected_revision": revision,
        "actor": actor_to_dict(SYSTEM_ACTOR),
        "reason": "expires_at has passed",
    }


def expire_due(
    conn: psycopg.Connection[Any],
    *,
    batch_size: int = 200,
    signed: bool = True,
    ledger_window: timedelta | None = DEFAULT_LEDGER_WINDOW,
) -> list[StoredOutcome]:
    """Expire up to ``batch_size`` due requests in one transaction; return their outcomes.

    The caller publishes the returned events after this returns (the sweep has committed).
    The expirations are the worker's own commands: unsigned, and needing no role.
    """
    with conn.transaction():
        due = conn.execute(
            sql.CLAIM_DUE, {"batch_size": batch_size, "scan_size": batch_size * 4}
        ).fetchall()
        commands = [expire_command(rid, revision) for rid, revision in due]
        results = apply_commands(
            conn, commands, Trust(signed=signed, internal=True, ledger_window=ledger_window)
        )
    return [result for result in results if isinstance(result, StoredOutcome)]
