"""The worker's own small exception tree; psycopg errors are translated once, here."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors


class InfrastructureError(Exception):
    """A fault of the surroundings (lost connection, deadlock, broker down): retry, never
    answer it as a rejection."""


class TransientConflict(Exception):
    """A race the transaction lost in a way that rerunning it resolves (two first deliveries
    of one command, two submits of one request). Rerun at once; never surfaced."""


_TRANSIENT_STATES = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
    pg_errors.AdminShutdown,
    pg_errors.CannotConnectNow,
    pg_errors.TooManyConnections,
)


def translate(exc: BaseException) -> BaseException:
    """Map a psycopg error to the project's tree; anything else is returned unchanged."""
    if isinstance(exc, pg_errors.UniqueViolation):
        return TransientConflict(str(exc))
    if isinstance(exc, (*_TRANSIENT_STATES, psycopg.OperationalError, psycopg.InterfaceError)):
        return InfrastructureError(f"{type(exc).__name__}: {exc}")
    return exc
