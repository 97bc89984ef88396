"""The deployment's trust mode, as ``governance migrate`` records it: what a worker checks at
start and ``governance status`` compares every worker with."""

from __future__ import annotations

from typing import Any

import psycopg

#: The trust modes a deployment may record (``GOVERNANCE_AUTH``).
AUTH_MODES = ("signed", "off")


class TrustModeUnknown(Exception):
    """The database records no trust mode (never migrated, or migrated by an older version)."""


def recorded_auth(conn: psycopg.Connection[Any]) -> str:
    """The deployment's recorded trust mode; raises :class:`TrustModeUnknown`."""
    exists = conn.execute("SELECT to_regclass('deployment_settings') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        raise TrustModeUnknown("the database records no trust mode")
    row = conn.execute("SELECT auth FROM deployment_settings").fetchone()
    if row is None:
        raise TrustModeUnknown("the database records no trust mode")
    return str(row[0])
