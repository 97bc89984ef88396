"""The deployment's approval policy: its versions, and the registry changes it must survive.

Written only by the operator CLI, through its own database access, like the registry
(:mod:`worker.registry`): the workers read the newest version of ``policy_versions`` at each
submit and never write one. Every apply adds a version (append-only; the database writes its
``registry_audit`` row), after checking the policy against the registry as it stands: every
group and actor it names must be registered, and every rule satisfiable for every submitter
(:func:`governance.satisfiability.unsatisfiable`). A registry change that would leave the
active policy unsatisfiable is refused the same way (:func:`change_registry`).

An apply and a registry change made through :func:`change_registry` take one transaction-
scoped advisory lock first, so that neither can slip between the other's check and its
write: two applies get two versions, and two deactivations that would each leave one
approver of a group are judged one after the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from governance.codec import timestamp_to_wire
from governance.policy import Policy
from governance.policy_document import PolicyError, policy_from_document, unregistered_names
from governance.satisfiability import RosterActor, Shortfall, unsatisfiable
from worker import registry

T = TypeVar("T")

#: The advisory lock every apply and every checked registry change takes (the two-integer
#: key space, which never meets the one-integer keys of requests and migrations).
POLICY_LOCK = "SELECT pg_advisory_xact_lock(1735357984, 1886350457)"

VERSION_COLUMNS = "version, sha256, document, applied_by, applied_at, forced"
SELECT_ACTIVE = f"SELECT {VERSION_COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT 1"
SELECT_VERSION = f"SELECT {VERSION_COLUMNS} FROM policy_versions WHERE version = %(version)s"
SELECT_HISTORY = f"SELECT {VERSION_COLUMNS} FROM policy_versions ORDER BY version"
INSERT_VERSION = f"""
INSERT INTO policy_versions (version, sha256, document, forced)
SELECT coalesce(max(version), 0) + 1, %(sha256)s, %(document)s, %(forced)s FROM policy_versions
RETURNING {VERSION_COLUMNS}
"""
#: A registry change forced past the policy check: the trigger on the table records the
#: change itself; this row records that it broke the active policy, and how.
AUDIT_FORCED = """
INSERT INTO registry_audit (action, actor_id, key_id, details)
VALUES ('policy_check_forced', %(actor_id)s, %(key_id)s, %(details)s)
"""


class PolicyStoreError(Exception):
    """A version that does not exist, or no policy applied where one is needed; the message
    says which, for an operator to read."""


class PolicyUnsatisfiable(Exception):
    """A policy that the registry cannot satisfy, or a registry change that would leave the
    active policy so: ``shortfalls`` name each rule, submitter and what is missing."""

    def __init__(self, shortfalls: Sequence[Shortfall], *, version: int | None = None) -> None:
        self.shortfalls = tuple(shortfalls)
        self.version = version
        reasons = "; ".join(str(shortfall) for shortfall in self.shortfalls)
        if version is None:
            message = f"the policy cannot be satisfied by the registry: {reasons}"
        else:
            message = (
                f"refused: this change would leave approval policy version {version} "
                f"unsatisfiable: {reasons} (--force makes it anyway)"
            )
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One applied version of the deployment's approval policy."""

    version: int
    sha256: str
    document: Mapping[str, Any]
    applied_by: str
    applied_at: datetime
    forced: bool

    @property
    def policy(self) -> Policy:
        """The policy compiled from its document."""
        return policy_from_document(self.document)

    def to_dict(self) -> dict[str, Any]:
        """The version in wire spelling, its document as stored."""
        return {
            "version": self.version,
            "sha256": self.sha256,
            "applied_by": self.applied_by,
            "applied_at": timestamp_to_wire(self.applied_at),
            "forced": self.forced,
            "document": dict(self.document),
        }


@dataclass(frozen=True, slots=True)
class Applied:
    """What an apply did: the version now active; ``new`` False when it already had this
    document (nothing was added); ``forced_past`` what ``force`` overrode (unregistered
    names and shortfalls), empty otherwise."""

    version: PolicyVersion
    new: bool
    forced_past: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Guarded(Generic[T]):
    """A registry change checked against the active policy: what the change returned, the
    version it was checked against (None: no policy applied), and the shortfalls it
    introduced, which only ``force`` lets through."""

    result: T
    version: int | None
    forced_past: tuple[Shortfall, ...] = ()


def _version(row: tuple[Any, ...]) -> PolicyVersion:
    version, sha256, document, applied_by, applied_at, forced = row
    return PolicyVersion(version, sha256, document, applied_by, applied_at, forced)


def _lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(POLICY_LOCK)


# --------------------------------------------------------------------------- checks


def registry_problems(policy: Policy, roster: Iterable[RosterActor]) -> list[str]:
    """Every group and actor ``policy`` names that ``roster`` does not have (a group exists
    when some registered actor, active or not, is a member)."""
    actors = list(roster)
    groups = {group for actor in actors for group in actor.groups}
    return unregistered_names(policy, groups, {actor.actor_id for actor in actors})


def check_policy(policy: Policy, roster: Iterable[RosterActor]) -> None:
    """Refuse ``policy`` unless everything it names is in ``roster`` (:class:`PolicyError`)
    and every rule is satisfiable for every submitter (:class:`PolicyUnsatisfiable`)."""
    actors = list(roster)
    problems = registry_problems(policy, actors)
    if problems:
        raise PolicyError(problems)
    shortfalls = unsatisfiable(policy, actors)
    if shortfalls:
        raise PolicyUnsatisfiable(shortfalls)


# --------------------------------------------------------------------------- versions


def apply_policy(conn: psycopg.Connection[Any], policy: Policy, *, force: bool) -> Applied:
    """Make ``policy`` the active version, after checking it against the registry (see
    :func:`check_policy`); ``force`` applies it all the same (the version records that it
    was forced). Applying the active version's own document again adds no version."""
    with conn.transaction():
        _lock(conn)
        actors = registry.roster(conn)
        forced_past: list[str] = []
        try:
            check_policy(policy, actors)
        except PolicyError as exc:
            if not force:
                raise
            forced_past.extend(exc.problems)
            forced_past.extend(str(shortfall) for shortfall in unsatisfiable(policy, actors))
        except PolicyUnsatisfiable as exc:
            if not force:
                raise
            forced_past.extend(str(shortfall) for shortfall in exc.shortfalls)
        row = conn.execute(SELECT_ACTIVE).fetchone()
        if row is not None and row[1] == policy.sha256:
            return Applied(_version(row), new=False, forced_past=tuple(forced_past))
        params = {
            "sha256": policy.sha256,
            "document": Jsonb(dict(policy.document)),
            "forced": bool(forced_past),
        }
        inserted = conn.execute(INSERT_VERSION, params).fetchone()
    assert inserted is not None
    return Applied(_version(inserted), new=True, forced_past=tuple(forced_past))


def active_policy(conn: psycopg.Connection[Any]) -> PolicyVersion | None:
    """The active version (the newest), or None when no policy was ever applied."""
    row = conn.execute(SELECT_ACTIVE).fetchone()
    return None if row is None else _version(row)


def policy_version(conn: psycopg.Connection[Any], version: int) -> PolicyVersion:
    """Version ``version``; :class:`PolicyStoreError` when there is none."""
    row = conn.execute(SELECT_VERSION, {"version": version}).fetchone()
    if row is None:
        raise PolicyStoreError(f"there is no approval policy version {version}")
    return _version(row)


def policy_history(conn: psycopg.Connection[Any]) -> list[PolicyVersion]:
    """Every version, oldest first."""
    return [_version(row) for row in conn.execute(SELECT_HISTORY)]


# --------------------------------------------------------------------------- the registry


def change_registry(
    conn: psycopg.Connection[Any],
    change: Callable[[], T],
    *,
    force: bool,
    actor_id: str | None = None,
    key_id: str | None = None,
) -> Guarded[T]:
    """Make a registry ``change`` (a function of :mod:`worker.registry` on ``conn``) unless
    it would leave the active policy unsatisfiable for a rule and submitter it satisfied
    before: then :class:`PolicyUnsatisfiable`, and nothing is changed. With ``force`` the
    change is made all the same, and a ``policy_check_forced`` audit row (naming
    ``actor_id`` or ``key_id``) records what it broke.

    Shortfalls the policy had before the change do not refuse it: a policy forced past the
    check can still be mended one change at a time.
    """
    with conn.transaction():
        _lock(conn)
        active = active_policy(conn)
        if active is None:
            return Guarded(change(), None)
        try:
            policy = active.policy
        except PolicyError as exc:
            raise PolicyStoreError(
                f"approval policy version {active.version} cannot be read, so this change "
                f"cannot be checked against it: {exc}"
            ) from exc
        before = {(s.rule_id, s.submitter) for s in unsatisfiable(policy, registry.roster(conn))}
        result = change()
        broken = tuple(
            shortfall
            for shortfall in unsatisfiable(policy, registry.roster(conn))
            if (shortfall.rule_id, shortfall.submitter) not in before
        )
        if broken and not force:
            raise PolicyUnsatisfiable(broken, version=active.version)
        if broken:
            details = {"policy_version": active.version, "shortfalls": [str(s) for s in broken]}
            conn.execute(
                AUDIT_FORCED, {"actor_id": actor_id, "key_id": key_id, "details": Jsonb(details)}
            )
    return Guarded(result, active.version, broken)
