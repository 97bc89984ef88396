"""The producer: build, send and await transition commands, follow the events, query.

Depends on the core package ``governance`` only (never on ``worker``) and never writes to
the database.
"""

from governance.commands import Command, InvalidCommand
from producer.client import GovernanceClient
from producer.outcomes import (
    EXIT_APPLIED,
    EXIT_CONFLICT,
    EXIT_REJECTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    OutcomeTimeout,
    exit_code_for,
    worst_exit_code,
)
from producer.queries import HistoryEntry, Queries, RequestView, read_event_log
from producer.subscriptions import EventFilter, Replay, Subscription, replay

__all__ = [
    "EXIT_APPLIED",
    "EXIT_CONFLICT",
    "EXIT_REJECTED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "Command",
    "EventFilter",
    "GovernanceClient",
    "HistoryEntry",
    "InvalidCommand",
    "OutcomeTimeout",
    "Queries",
    "Replay",
    "RequestView",
    "Subscription",
    "exit_code_for",
    "read_event_log",
    "replay",
    "worst_exit_code",
]
