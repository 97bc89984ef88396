"""The worker's own small exception tree; psycopg errors are translated once, here.

Every driver error is classified by its SQLSTATE class, because what to do with a failed
command depends only on whose fault it was:

- the surroundings' (the connection, the server, a lock or a race): :class:`InfrastructureError`,
  retried until the fault ends and never counted against the message;
- the message's own (data the server refuses, a constraint it breaks, a limit it exceeds):
  :class:`MessageFault`, retried a bounded number of times and then parked;
- a benign race that rerunning the transaction resolves at once: :class:`TransientConflict`;
- either of the first two, which the state alone cannot tell (a statement or lock timeout,
  an internal error): :class:`SuspectFault`, retried like the surroundings' faults but
  counted against the message, and parked after a generous bound, so that a message which
  itself causes one every time cannot loop until the broker's delivery limit.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors


class InfrastructureError(Exception):
    """A fault of the surroundings (lost connection, deadlock, database down): retry, never
    answer it as a rejection, never count it against the message."""


class MessageFault(Exception):
    """A failure the message itself causes every time it is applied (the server refuses its
    data, it breaks a constraint or a program limit). Retried a bounded number of times, then
    the message is parked with this reason."""


class SuspectFault(InfrastructureError):
    """A fault that may be the surroundings' or the message's own: a statement canceled by
    its timeout (57014), a lock not had in time (55P03), an internal error (class XX). An
    :class:`InfrastructureError`, so it is first retried in process like one; a delivery it
    still ends is retried later, counted (``GOVERNANCE_SUSPECT_RETRY_LIMIT``), then parked."""


class TransientConflict(Exception):
    """A race the transaction lost in a way that rerunning it resolves (two first deliveries
    of one command, two submits of one request). Rerun at once; never surfaced."""


#: SQLSTATE classes of faults in the surroundings: connection exception, transaction
#: rollback (serialization failure, deadlock), insufficient resources, operator intervention
#: (admin shutdown, query canceled by a statement timeout, cannot connect now), system error.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})

#: States outside those classes that are faults of the moment, not of the message: a
#: an object in use by a concurrent operation (55006), and a write refused by a read-only
#: server (25006): a standby, reached before a failover completed, or an old primary after it.
_TRANSIENT_STATES = frozenset({"55006", "25006"})
#: Faults either side may cause (see :class:`SuspectFault`): a statement canceled (57014, by
#: ``statement_timeout`` or an operator), ``lock_timeout`` expiring (55P03), and internal
#: errors (class XX: XX000, XX001 data corrupted, XX002 index corrupted).
_SUSPECT_STATES = frozenset({"57014", "55P03"})
_SUSPECT_CLASSES = frozenset({"XX"})

#: Classes of faults of the deployment, which no redelivery cures but no message causes
#: either (a database not migrated, a role without a privilege, a wrong password): retried
#: like the surroundings' faults, so commands wait for the operator instead of being parked.
_DEPLOYMENT_CLASSES = frozenset({"28", "3D", "42"})

#: Classes of errors the message's own data causes: data exception (22), integrity constraint
#: violation (23), program limit exceeded (54).
_MESSAGE_CLASSES = frozenset({"22", "23", "54"})


def translate(exc: BaseException) -> BaseException:
    """Map a psycopg error to the project's tree; anything else is returned unchanged."""
    if not isinstance(exc, psycopg.Error):
        return exc
    if isinstance(exc, pg_errors.UniqueViolation):
        return TransientConflict(str(exc))
    state = exc.sqlstate
    described = f"{type(exc).__name__} ({state or 'no SQLSTATE'}): {exc}"
    if state is None:
        # No server answer at all: the connection failed or was lost.
        return InfrastructureError(described)
    if state in _SUSPECT_STATES or state[:2] in _SUSPECT_CLASSES:
        return SuspectFault(described)
    if state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES | _DEPLOYMENT_CLASSES:
        return InfrastructureError(described)
    if state[:2] in _MESSAGE_CLASSES:
        return MessageFault(described)
    # Anything else is bounded like a message fault, so one message cannot stall the queue.
    return MessageFault(described)
