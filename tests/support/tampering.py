"""History rewritten as whoever holds the database itself can: with the guards switched off.

Re-execution catches every rewrite that leaves a decision not following from its signed
command. What it cannot catch is a history cut short: the last revisions removed, their kept
commands too, and the row set back to what the revision before left. Only an anchor, kept
off the database host, shows that.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from tests.support.services import owner_bypassing_guards

#: The columns of a request row that a revision changes.
REVISION_COLUMNS = (
    "status",
    "pending_reason",
    "approval_requirements",
    "revision",
    "expires_at",
    "updated_at",
    "metadata",
    "policy",
)


def cut_short(conn: psycopg.Connection[Any], request_id: str, to_revision: int) -> None:
    """Remove ``request_id``'s revisions after ``to_revision`` (decisions and kept commands)
    and set its row back to what ``to_revision`` left (as its applied event recorded it),
    with the chain head of what remains: a history every check but an anchor accepts."""
    row = conn.execute(
        "SELECT body->'request' FROM outbox_events WHERE request_id = %s"
        " AND event_type = 'transition.applied' AND (body->>'revision')::int = %s",
        (request_id, to_revision),
    ).fetchone()
    assert row is not None, f"no applied event of revision {to_revision}"
    state = row[0]
    with owner_bypassing_guards(conn):
        for table in ("request_decisions", "command_proofs"):
            conn.execute(
                f"DELETE FROM {table} WHERE request_id = %s AND revision > %s",
                (request_id, to_revision),
            )
        assignments = ", ".join(f"{name} = %({name})s" for name in REVISION_COLUMNS)
        values = {name: state.get(name) for name in REVISION_COLUMNS}
        for name in ("approval_requirements", "metadata", "policy"):
            values[name] = None if values[name] is None else json.dumps(values[name])
        conn.execute(
            f"UPDATE mutation_requests SET {assignments}, chain_head = ("
            "SELECT chain_hash FROM request_decisions WHERE request_id = %(request_id)s"
            " ORDER BY revision DESC, position DESC LIMIT 1) WHERE request_id = %(request_id)s",
            {**values, "request_id": request_id},
        )
