"""Batch mode: many commands per transaction, one savepoint per command.

The per-task path pays Celery's per-message work, two database round trips, a commit (a WAL
flush) and a publisher confirm for every command. In batch mode a consumer step of the
worker's main process takes up to ``GOVERNANCE_BATCH_SIZE`` command messages (or what arrived
within ``GOVERNANCE_BATCH_LINGER_MS``), runs them through the same guarded transaction — two
round trips and one commit for the whole batch — publishes the events, and only then
acknowledges the messages. Each command is still decided against its request as locked and
as the batch's earlier commands left it; a rejection is a recorded outcome like any other.
The trade: a command waits for its batch (the linger), and commands of one batch commit
together — a crash before the commit redelivers all of them, none applied.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from governance.topology import APPLY_COMMAND_TASK
from worker.errors import InfrastructureError
from worker.transaction import NotACommand, StoredOutcome, apply_commands

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Failed:
    """A command whose handler raised something unexpected; its savepoint was rolled back."""

    error: Exception


BatchResult = StoredOutcome | NotACommand | Failed


def apply_batch(conn: psycopg.Connection[Any], payloads: Sequence[object]) -> list[BatchResult]:
    """Apply ``payloads`` in one guarded transaction; results in input order.

    If the transaction fails for anything but an infrastructure fault (a command that makes
    the handler raise), each command is applied again in a transaction of its own, so one
    bad command fails alone. Infrastructure faults are raised: nothing was committed.
    """
    try:
        return list(apply_commands(conn, payloads))
    except InfrastructureError:
        raise
    except Exception:
        log.exception("a batch of %d failed; applying its commands one by one", len(payloads))
    results: list[BatchResult] = []
    for payload in payloads:
        try:
            results.extend(apply_commands(conn, [payload]))
        except InfrastructureError:
            raise
        except Exception as exc:
            results.append(Failed(exc))
    return results


def publication_plan(
    outcomes: Sequence[StoredOutcome],
) -> tuple[list[StoredOutcome], list[StoredOutcome]]:
    """Split a committed batch's outcomes into those that can go out at once (in sequence
    order) and those that must wait for predecessors published by someone else.

    An event is ready when every unpublished predecessor it saw under the lock is an earlier
    event of this same batch, which goes out before it.
    """
    ready: list[StoredOutcome] = []
    waiting: list[StoredOutcome] = []
    earlier_in_batch: Counter[str] = Counter()
    blocked: set[str] = set()
    for stored in sorted(outcomes, key=lambda s: s.sequence):
        request_id = stored.event.get("request_id")
        if stored.replayed or request_id is None:
            ready.append(stored)
            continue
        outside = stored.unpublished_before - earlier_in_batch[request_id]
        earlier_in_batch[request_id] += 1
        if outside > 0 or request_id in blocked:
            blocked.add(request_id)
            waiting.append(stored)
        else:
            ready.append(stored)
    return ready, waiting


def decode_task_message(
    headers: dict[str, Any] | None, body: bytes | str, content_type: str | None
) -> tuple[object, str | None]:
    """The command a Celery task message carries, or why it carries none."""
    task = (headers or {}).get("task")
    if task is None:
        return None, "not a task message (no task header)"
    if task != APPLY_COMMAND_TASK:
        return None, f"unknown task: {task!r}"
    if content_type != "application/json":
        return None, f"undecodable message: content type {content_type!r} is not application/json"
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"undecodable message: {exc}"
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return None, "invalid task message: the body is not [args, kwargs, embed]"
    args, kwargs = decoded[0], decoded[1]
    if not isinstance(args, list) or len(args) != 1 or kwargs:
        count = len(args) if isinstance(args, list) else 0
        return None, (
            "expected exactly one positional argument (the command object), got "
            f"{count} positional and {len(kwargs) if isinstance(kwargs, dict) else 0} "
            "keyword argument(s)"
        )
    return args[0], None
