"""Gating on a request's status: return at once if it is there (its history verified), else
wait on its events."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from governance.lifecycle import ALLOWED_TRANSITIONS
from governance.model import Status
from producer.audit import verify_request
from producer.event_log import connect_reader
from producer.event_proof import EventVerifier
from producer.outcomes import EXIT_ALTERED, EXIT_APPLIED, EXIT_REJECTED, EXIT_TIMEOUT
from producer.queries import Queries
from producer.subscriptions import EventFilter, Subscription


@dataclass(frozen=True)
class GateResult:
    """How a wait ended: ``exit_code`` 0 (reached), 4 (can no longer be reached: the request
    ended in another terminal status), 5 (timed out) or 6 (the status was already in the
    database, but the request's history does not verify: ``message`` says what is wrong).
    ``event`` is the applied event that brought the request to its status (for a status
    already reached, the last one in the log; None when its history does not verify);
    ``status`` the status the request was last seen in (None: not seen yet)."""

    exit_code: int
    status: str | None
    event: dict[str, Any] | None
    message: str


def _terminal(status: str) -> bool:
    return not ALLOWED_TRANSITIONS.get(Status(status))


def _verified(database_url: str, request_id: str, reached: GateResult) -> GateResult:
    """``reached`` if ``request_id``'s history verifies, else an exit 6 naming what is wrong.

    A status read from the row is only what the row says: whoever can write the database
    can set it. The history behind it is the proof, so the gate opens only on a history
    that verifies (the one verifier, :func:`producer.audit.verify_request`)."""
    with connect_reader(database_url) as conn:
        findings = verify_request(conn, request_id)
    if findings is None:
        problems = [f"{request_id} no longer exists"]
    elif findings.ok:
        return reached
    else:
        problems = [str(finding) for finding in findings.failures]
    return GateResult(
        EXIT_ALTERED,
        reached.status,
        None,
        f"{request_id} is {reached.status}, but its history does not verify:\n"
        + "\n".join(problems),
    )


def wait_for_status(
    database_url: str,
    broker_url: str,
    request_id: str,
    until: set[str],
    timeout: float,
    *,
    on_waiting: Callable[[str | None], object] | None = None,
    verifier: EventVerifier | None = None,
) -> GateResult:
    """Wait until ``request_id`` is in one of the ``until`` statuses.

    The event subscription is bound *before* the request is read, so a transition committed
    between the read and the wait is never missed; events older than the revision read are
    ignored. A request found already in one of ``until`` is verified first (exit 6 when its
    history does not verify). A request that does not exist yet is waited for.
    ``on_waiting`` is called with
    the current status (None: not submitted yet) once the gate is listening and has to wait.

    Only events signed by a registered worker count (``verifier``, default the registry's
    worker keys on ``database_url``): a forged ``transition.applied`` published straight to
    the exchange is ignored, and the gate keeps waiting.
    """
    unknown = until - {s.value for s in Status}
    if unknown:
        raise ValueError(f"unknown status {sorted(unknown)[0]!r}")
    queries = Queries(database_url)
    deadline = time.monotonic() + timeout
    with Subscription(
        broker_url,
        EventFilter.of(request_ids=[request_id], outcomes=["applied"]),
        verifier=EventVerifier.registry(database_url) if verifier is None else verifier,
    ) as events:
        view = queries.request(request_id)
        seen_revision = 0
        status: str | None = None
        if view is not None:
            status = view.request.status.value
            seen_revision = view.request.revision
            if status in until:
                reached = GateResult(
                    EXIT_APPLIED,
                    status,
                    queries.latest_event(request_id),
                    f"{request_id} is {status}",
                )
                return _verified(database_url, request_id, reached)
            if _terminal(status):
                return GateResult(
                    EXIT_REJECTED,
                    status,
                    queries.latest_event(request_id),
                    f"{request_id} ended {status}; it can never become {'/'.join(sorted(until))}",
                )
        if on_waiting is not None:
            on_waiting(status)
        while (left := deadline - time.monotonic()) > 0:
            event = events.get(timeout=left)
            if event is None:
                break
            if int(event.get("revision") or 0) <= seen_revision:
                continue  # already accounted for by the read
            seen_revision = int(event["revision"])
            status = str(event["to_status"])
            if status in until:
                return GateResult(EXIT_APPLIED, status, event, f"{request_id} is {status}")
            if _terminal(status):
                return GateResult(
                    EXIT_REJECTED,
                    status,
                    event,
                    f"{request_id} ended {status}; it can never become {'/'.join(sorted(until))}",
                )
    return GateResult(
        EXIT_TIMEOUT,
        status,
        None,
        f"timed out after {timeout:g}s; {request_id} is {status or 'not submitted'}",
    )
