"""Approval policies for the tests' databases.

The worker's default mode takes every request's requirements from the deployment's approval
policy and refuses a submit while none is applied, so every database a test migrates gets
:data:`OPEN_POLICY`: it asks for nothing itself, and a request then needs exactly what its
requester adds (``source: requester``), as the tests that are not about the policy expect.
Tests about the policy apply their own.
"""

from __future__ import annotations

import psycopg

from governance.policy import Policy
from governance.policy_document import parse_policy
from worker.policy_store import apply_policy as apply_policy_version

OPEN_POLICY = """\
policy: 1
rules:
  - id: open
    description: A request needs the approvals its requester asks for, nothing more.
    require: []
"""


def apply_policy(database_url: str, text: str = OPEN_POLICY) -> tuple[int, Policy]:
    """Make ``text`` the database's active approval policy, as ``governance policy apply
    --force`` does (a test registers the policy's approvers when it needs them, often
    after); its version and compiled form."""
    policy = parse_policy(text)
    with psycopg.connect(database_url, autocommit=True) as conn:
        applied = apply_policy_version(conn, policy, force=True)
    return applied.version.version, policy
