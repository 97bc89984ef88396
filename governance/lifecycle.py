"""The lifecycle table (**contract**): which status may follow which, and which statuses a
request may be in to supersede another."""

from __future__ import annotations

from governance.model import Status

ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset(
        {Status.PENDING, Status.APPROVED, Status.CANCELED, Status.SUPERSEDED}
    ),
    Status.PENDING: frozenset(
        {Status.APPROVED, Status.REJECTED, Status.CANCELED, Status.EXPIRED, Status.SUPERSEDED}
    ),
    Status.APPROVED: frozenset(
        {Status.PENDING, Status.REJECTED, Status.CANCELED, Status.SUPERSEDED, Status.EXECUTED}
    ),
    Status.REJECTED: frozenset(),
    Status.CANCELED: frozenset(),
    Status.EXPIRED: frozenset(),
    Status.SUPERSEDED: frozenset(),
    Status.EXECUTED: frozenset(),
}

TERMINAL_STATUSES: frozenset[Status] = frozenset(
    status for status, targets in ALLOWED_TRANSITIONS.items() if not targets
)


#: A request still on its way (created, pending, approved) or carried out (executed) can
#: replace another; one that ended without effect (superseded, canceled, rejected, expired)
#: never will, so a request superseded by it would be replaced by nothing.
SUPERSEDING_STATUSES: frozenset[Status] = frozenset(
    {Status.CREATED, Status.PENDING, Status.APPROVED, Status.EXECUTED}
)


def can_transition(from_status: Status, to_status: Status) -> bool:
    """True when the table allows ``from_status`` → ``to_status`` (never to itself)."""
    return to_status in ALLOWED_TRANSITIONS[from_status]


def is_terminal(status: Status) -> bool:
    """True when no status may follow ``status``."""
    return status in TERMINAL_STATUSES
