"""The governance core: mutation requests, their lifecycle, and the command and event contract.

Pure Python with no I/O. The modules a reader looks for:

- :mod:`governance.lifecycle` — the transition table;
- :mod:`governance.rules` — one decision function per command type, and ``decide``;
- :mod:`governance.commands` — the command schema, parsing and validation;
- :mod:`governance.policy` — the approval policy and its evaluation at submit
  (:mod:`governance.policy_document` reads it, :mod:`governance.satisfiability` checks it
  against the registry).
"""

from governance.commands import Command, CommandType, InvalidCommand, parse_command
from governance.lifecycle import ALLOWED_TRANSITIONS, TERMINAL_STATUSES, can_transition
from governance.model import Actor, MutationRequest, PendingReason, Status
from governance.rules import Applied, Rejection, RejectionCode, decide

__all__ = [
    "ALLOWED_TRANSITIONS",
    "TERMINAL_STATUSES",
    "Actor",
    "Applied",
    "Command",
    "CommandType",
    "InvalidCommand",
    "MutationRequest",
    "PendingReason",
    "Rejection",
    "RejectionCode",
    "Status",
    "can_transition",
    "decide",
    "parse_command",
]
