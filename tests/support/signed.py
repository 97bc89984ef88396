"""The guarded transaction as the tests call it in process: every command signed by its
actor's test key first (see :mod:`tests.support.identities`), as a worker in the default,
signed mode requires. Tests about development mode pass ``trust=DEVELOPMENT`` and send
unsigned commands, and say so in their names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from governance.authentication import SIGNED, Trust
from tests.support.identities import sign
from worker import transaction
from worker.transaction import Result, StoredOutcome

#: The worker's development mode (``GOVERNANCE_AUTH=off``).
DEVELOPMENT = Trust(signed=False)


#: How the worker applies its own commands (expiry by the ``system`` actor).
INTERNAL = Trust(internal=True)


def apply_command(
    conn: psycopg.Connection[Any], payload: object, trust: Trust = SIGNED
) -> StoredOutcome:
    """:func:`worker.transaction.apply_command` of ``payload`` signed (in signed mode); a
    command of the ``system`` actor is applied as the worker applies its own."""
    if _by_the_worker(payload):
        trust = INTERNAL
    return transaction.apply_command(conn, sign(payload) if trust.signed else payload, trust)


def apply_commands(
    conn: psycopg.Connection[Any], payloads: Sequence[object], trust: Trust = SIGNED
) -> list[Result]:
    """:func:`worker.transaction.apply_commands` of ``payloads`` signed (in signed mode)."""
    if payloads and all(_by_the_worker(p) for p in payloads):
        trust = INTERNAL
    signed = [sign(p) for p in payloads] if trust.signed else list(payloads)
    return transaction.apply_commands(conn, signed, trust)


def _by_the_worker(payload: object) -> bool:
    actor = payload.get("actor") if isinstance(payload, dict) else None
    return isinstance(actor, dict) and actor.get("id") == "system"
