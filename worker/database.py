"""The worker's PostgreSQL connections, with every bound on a database wait set in one place.

A database fails a client in three ways, and each needs its own bound:

- it is down or cannot be reached: ``connect_timeout`` bounds one connection attempt, and the
  pool's acquire timeout bounds how long a command waits for a connection at all, so the
  command goes back to be retried instead of holding its worker;
- it vanishes mid-conversation (a partition: packets dropped, nothing refused): no error ever
  arrives, so only TCP itself can tell. Keepalives find an idle connection whose peer is gone,
  ``tcp_user_timeout`` a busy one whose data nobody acknowledges. The server gets the same
  settings, so it drops the sessions of a client that vanished instead of keeping them (and
  their connection slots) for hours;
- it answers, but a wait inside it lasts: ``lock_timeout`` ends a wait for a lock whose holder
  froze (SQLSTATE 55P03, retried like any infrastructure fault, never a rejection),
  ``statement_timeout`` a statement that runs away, and ``idle_in_transaction_session_timeout``
  the frozen holder's own transaction, so the server releases its row locks.

A failover (the primary lost, a standby promoted) needs nothing of its own: the URL lists
every node (``postgresql://u@node1:5432,node2:5432/db?target_session_attrs=read-write``), the
pool's check discards the connections the old primary's death broke, and each new connection
goes to whichever node takes writes now; until one does, commands wait (their acquire timeout,
then the broker) and are never applied anywhere else. A URL of several hosts that does not say
``target_session_attrs`` gets ``read-write``: libpq's default takes the first node that
answers, which after a failover may be a standby, where every command would fail. No bound
here cuts short a commit waiting for a synchronous standby (``statement_timeout`` does not
apply to that wait), and none must: PostgreSQL reports a commit whose wait was cancelled as
committed, though only one node has it.

The server-side settings travel in the startup packet (libpq's ``options``), not as ``SET``
statements: they cost no round trip, hold for autocommit and pipelined use alike, and are
the session's defaults, so a ``RESET ALL`` returns to them rather than to the server's.
"""

from __future__ import annotations

import math
import os
import select
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import ConnStatus
from psycopg_pool import ConnectionPool

from worker import startup
from worker.config import Settings

#: How many times the pool's check reads from an idle connection that has something to say:
#: a server that ends a session first sends the reason, then closes the stream.
_FAREWELL_READS = 3


def connection_parameters(settings: Settings) -> dict[str, int]:
    """The libpq parameters that bound how long the client waits on the network."""
    return {
        # libpq counts whole seconds and treats anything under 2 as 2.
        "connect_timeout": max(2, math.ceil(settings.db_connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": _whole_seconds(settings.db_keepalives_idle),
        "keepalives_interval": _whole_seconds(settings.db_keepalives_interval),
        "keepalives_count": settings.db_keepalives_count,
        "tcp_user_timeout": _milliseconds(settings.db_tcp_user_timeout),
    }


def session_settings(settings: Settings) -> dict[str, int | str]:
    """The server-side settings of every worker session (milliseconds and seconds, as
    PostgreSQL reads a bare number for each)."""
    return {
        "lock_timeout": _milliseconds(settings.db_lock_timeout),
        "statement_timeout": _milliseconds(settings.db_statement_timeout),
        "idle_in_transaction_session_timeout": _milliseconds(
            settings.db_idle_in_transaction_timeout
        ),
        "tcp_keepalives_idle": _whole_seconds(settings.db_keepalives_idle),
        "tcp_keepalives_interval": _whole_seconds(settings.db_keepalives_interval),
        "tcp_keepalives_count": settings.db_keepalives_count,
        "tcp_user_timeout": _milliseconds(settings.db_tcp_user_timeout),
        # psycopg prepares a statement once it has run a few times, and PostgreSQL may then
        # settle on a generic plan built while the tables were small (a new deployment,
        # right after a migration) and keep it until the next ANALYZE: sequential scans of
        # the requests and the ledger that grow with every command. Plans are made for the
        # batch at hand instead (a few hundred microseconds of the server's time per batch).
        "plan_cache_mode": "force_custom_plan",
    }


def conninfo(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The connection string a worker connects with: ``settings.database_url`` with the
    bounds of :func:`connection_parameters` and :func:`session_settings` merged in.

    Nothing the URL says is overridden: a libpq parameter it sets keeps its value, and its
    own ``options`` (or, without them, ``PGOPTIONS`` from ``environ``, which an ``options``
    parameter would otherwise silently replace) come after the worker's, where PostgreSQL,
    reading them left to right, lets them win. A URL of several hosts that leaves
    ``target_session_attrs`` unsaid gets ``read-write`` (see the module's docstring).
    """
    env = os.environ if environ is None else environ
    given = conninfo_to_dict(settings.database_url)
    added: dict[str, Any] = {
        key: value for key, value in connection_parameters(settings).items() if key not in given
    }
    if _several_hosts(given) and "target_session_attrs" not in given:
        added["target_session_attrs"] = "read-write"
    ours = " ".join(f"-c {name}={value}" for name, value in session_settings(settings).items())
    theirs = str(given.get("options") or env.get("PGOPTIONS") or "").strip()
    added["options"] = f"{ours} {theirs}" if theirs else ours
    return make_conninfo(settings.database_url, **added)


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """The pool's check before it hands out a connection: raise if the connection is already
    known to be dead, so the pool discards it and serves (or makes) another.

    It costs no round trip (a query would add one to every command, and during a partition
    would itself hang until ``tcp_user_timeout``). An idle connection has nothing to read,
    so anything readable is looked at: a server that ended the session (a restart,
    ``pg_terminate_backend``, an idle timeout) leaves its farewell and the end of the stream,
    a peer that keepalives or ``tcp_user_timeout`` gave up on leaves a socket error, and
    reading either makes libpq mark the connection bad.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
    for _ in range(_FAREWELL_READS):
        if not poller.poll(0):
            return
        pgconn.consume_input()
        if pgconn.status != ConnStatus.OK:
            raise psycopg.OperationalError("the connection was lost")
    # Nothing legitimate keeps arriving on an idle connection: not worth the risk.
    raise psycopg.OperationalError("the server keeps sending on an idle connection")


def create_pool(settings: Settings) -> ConnectionPool[psycopg.Connection[Any]]:
    """This process's connection pool, opened (it connects in the background; a command
    that finds no connection within ``db_acquire_timeout`` gets ``PoolTimeout``).

    Each connection it opens is checked for the deployment's trust mode
    (:func:`worker.startup.check_trust_mode`): one of another mode is discarded as if it
    could not be made, so nothing is applied under another mode than the deployment's."""

    def fits(conn: psycopg.Connection[Any]) -> None:
        startup.check_trust_mode(conn, settings.auth)

    return ConnectionPool(
        conninfo(settings),
        min_size=1,
        max_size=settings.pool_size,
        kwargs={"autocommit": True},
        name="governance",
        timeout=settings.db_acquire_timeout,
        reconnect_timeout=settings.db_reconnect_timeout,
        check=check_connection,
        configure=fits,
        open=True,
    )


def _several_hosts(given: Mapping[str, Any]) -> bool:
    return any("," in str(given.get(key) or "") for key in ("host", "hostaddr"))


def _milliseconds(seconds: float) -> int:
    # A positive value never rounds down to 0, which PostgreSQL and libpq read as "off".
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
