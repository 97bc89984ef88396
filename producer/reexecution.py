"""Re-execution for ``governance verify``: the registry's and the policies' histories read
from the database (or taken from an export), and each request's kept commands run again
through the core (:mod:`governance.replay`), its differences turned into findings.

One :class:`Reexecution` serves a whole ``verify --all``: the histories are read once, and a
request that another one names as its successor is replayed once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from governance.codec import timestamp_from_wire
from governance.model import MutationRequest
from governance.policy import Policy
from governance.policy_document import policy_from_document
from governance.replay import (
    Deployment,
    KeptCommand,
    PolicyHistory,
    PolicyVersion,
    RegistryChange,
    RegistryHistory,
    Replay,
    compare_row,
    reexecute,
)

#: Reads a request's kept commands and stored decisions, or None when it does not exist:
#: ``(kept, stored by revision)``.
HistorySource = Callable[[str], tuple[list[KeptCommand], dict[int, list[Mapping[str, Any]]]] | None]


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = timestamp_from_wire(str(value))
    if parsed is None:
        raise ValueError(f"not an instant: {value!r}")
    return parsed


def registry_changes(rows: Iterable[Mapping[str, Any]]) -> list[RegistryChange]:
    """Registry audit rows (``at``, ``action``, ``actor_id``, ``key_id``, ``details``) as
    changes; rows that are not changes of actors or keys are kept and ignored by replay."""
    changes = []
    for row in rows:
        details = row.get("details")
        if isinstance(details, str):
            details = json.loads(details)
        changes.append(
            RegistryChange(
                at=_instant(row["at"]),
                action=str(row["action"]),
                actor_id=row.get("actor_id"),
                key_id=row.get("key_id"),
                details=details if isinstance(details, Mapping) else {},
            )
        )
    return changes


_compiled: dict[str, Policy] = {}


def policy_versions(rows: Iterable[Mapping[str, Any]]) -> list[PolicyVersion]:
    """Policy version rows (``version``, ``sha256``, ``applied_at``, ``document``),
    compiled (once per document hash in this process)."""
    versions = []
    for row in rows:
        sha256 = str(row["sha256"])
        policy = _compiled.get(sha256)
        if policy is None:
            policy = policy_from_document(row["document"])
            _compiled[sha256] = policy
        versions.append(PolicyVersion(int(row["version"]), _instant(row["applied_at"]), policy))
    return versions


REGISTRY_AUDIT = (
    "SELECT at, action, actor_id, key_id, details FROM registry_audit"
    " WHERE action IN ('actor_added', 'actor_updated', 'actor_deleted', 'key_added',"
    " 'key_revoked') ORDER BY at, id"
)
POLICY_VERSIONS = "SELECT version, sha256, applied_at, document FROM policy_versions"


def read_registry_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The registry's audit rows that re-execution needs, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(REGISTRY_AUDIT))


def read_policy_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every version of the approval policy."""
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(POLICY_VERSIONS))


def kept_commands(proofs: Iterable[Mapping[str, Any]]) -> list[KeptCommand] | None:
    """Kept command rows as :class:`KeptCommand`; None when one is not readable (the form
    checks report it)."""
    kept = []
    for proof in proofs:
        try:
            payload = json.loads(proof["signed_command"])
        except (KeyError, TypeError, ValueError):
            return None
        revision, command_id = proof.get("revision"), proof.get("command_id")
        if not isinstance(payload, dict) or not isinstance(revision, int):
            return None
        key_id = proof.get("key_id")
        kept.append(
            KeptCommand(
                revision,
                str(command_id),
                key_id if isinstance(key_id, str) else None,
                payload,
            )
        )
    return kept


def stored_by_revision(
    decisions: Iterable[Mapping[str, Any]],
) -> dict[int, list[Mapping[str, Any]]]:
    """Stored decision rows grouped by revision, in position order."""
    stored: dict[int, list[Mapping[str, Any]]] = {}
    for row in sorted(decisions, key=lambda r: (r.get("revision", 0), r.get("position", 0))):
        revision = row.get("revision")
        if isinstance(revision, int):
            stored.setdefault(revision, []).append(row)
    return stored


class Reexecution:
    """What re-executing needs beside a request's own history: the registry's and the
    policies' histories, the deployment's modes, and where to read a successor's history."""

    def __init__(
        self,
        registry: RegistryHistory,
        policies: PolicyHistory,
        deployment: Deployment,
        source: HistorySource,
    ) -> None:
        self.registry = registry
        self.policies = policies
        self.deployment = deployment
        self._source = source
        self._replays: dict[str, Replay | None] = {}
        self._replaying: set[str] = set()

    @classmethod
    def from_database(
        cls, conn: psycopg.Connection[Any], deployment: Deployment, source: HistorySource
    ) -> Reexecution:
        """Histories read from the database ``conn`` reaches."""
        return cls(
            RegistryHistory(registry_changes(read_registry_rows(conn))),
            PolicyHistory(policy_versions(read_policy_rows(conn))),
            deployment,
            source,
        )

    def replay(
        self,
        request_id: str,
        kept: Sequence[KeptCommand],
        stored: Mapping[int, Sequence[Mapping[str, Any]]],
    ) -> Replay:
        """``request_id`` re-executed (and remembered for the requests it succeeds)."""
        self._replaying.add(request_id)
        try:
            done = reexecute(
                request_id,
                kept,
                stored,
                self.registry,
                self.policies,
                self.deployment,
                self._successor_at,
            )
        finally:
            self._replaying.discard(request_id)
        self._replays[request_id] = done
        return done

    def differences(
        self,
        request_id: str,
        kept: Sequence[KeptCommand],
        stored: Mapping[int, Sequence[Mapping[str, Any]]],
        row: Mapping[str, Any],
    ) -> list[tuple[int | None, str, str | None]]:
        """Everything re-execution finds different: ``(revision, message, command_id)``."""
        done = self.replay(request_id, kept, stored)
        found = [(d.revision, d.message, d.command_id) for d in done.differences]
        if not done.differences:
            found += [(d.revision, d.message, d.command_id) for d in compare_row(done, row)]
        return found

    def _successor_at(self, request_id: str, instant: datetime) -> MutationRequest | None:
        if request_id in self._replaying:
            return None
        if request_id not in self._replays:
            read = self._source(request_id)
            if read is None:
                self._replays[request_id] = None
            else:
                self.replay(request_id, *read)
        done = self._replays.get(request_id)
        return None if done is None else done.at(instant)
