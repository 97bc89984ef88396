"""Approval policies for the tests' databases.

The worker's default mode takes every request's requirements from the deployment's approval
policy and refuses a submit while none is applied, so every database a test migrates gets
:data:`OPEN_POLICY`: it asks for nothing itself, and a request then needs exactly what its
requester adds (``source: requester``), as the tests that are not about the policy expect.
Tests about the policy apply their own.
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from governance.policy import Policy
from governance.policy_document import parse_policy

OPEN_POLICY = """\
policy: 1
rules:
  - id: open
    description: A request needs the approvals its requester asks for, nothing more.
    require: []
"""


def apply_policy(database_url: str, text: str = OPEN_POLICY) -> tuple[int, Policy]:
    """Make ``text`` the database's active approval policy (its next version), as
    ``governance policy apply --force`` would; its version and compiled form."""
    policy = parse_policy(text)
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute("LOCK TABLE policy_versions IN EXCLUSIVE MODE")
        row = conn.execute(
            "INSERT INTO policy_versions (version, sha256, document, forced) "
            "SELECT coalesce(max(version), 0) + 1, %s, %s, true FROM policy_versions "
            "RETURNING version",
            (policy.sha256, Jsonb(policy.document)),
        ).fetchone()
    assert row is not None
    return int(row[0]), policy
