"""The lifecycle table (**contract**): which status may follow which."""

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


def can_transition(from_status: Status, to_status: Status) -> bool:
    """True when the table allows ``from_status`` → ``to_status`` (never to itself)."""
    return to_status in ALLOWED_TRANSITIONS[from_status]


def is_terminal(status: Status) -> bool:
    return status in TERMINAL_STATUSES
