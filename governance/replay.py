"""Re-execution: a request's history derived again from its kept commands.

A history whose hashes and signatures hold proves only its form: whoever can append a
decision can quote a genuine signed *rejection* as the proof of an *approval*, or set a
request's status by hand. Re-execution proves substance. Every kept command goes again
through the very rules the worker ran: its authentication with the key as registered at the
decision time, the roles table and the approval rules with the actor's roles and groups as
they stood then, the approval policy version then in effect, and the grants that still stood
then. The decisions it gives must be the stored ones, and the request it leaves must be the
stored row.

Everything here is pure: the registry's and the policies' histories come in as data
(:class:`RegistryHistory`, :class:`PolicyHistory`), so ``governance verify`` runs it over the
database and an export alike.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from governance.authentication import (
    DEFAULT_AUDIENCE,
    DEFAULT_MAX_AGE,
    KeyRecord,
    authenticate,
)
from governance.authentication import Policy as CommandPolicy
from governance.codec import request_to_dict, timestamp_from_wire
from governance.commands import Command, CommandType, InvalidCommand, parse_command
from governance.events import applied_event
from governance.model import Actor, ActorType, ApprovalStatus, MutationRequest, Status
from governance.passkeys import SCHEME_ED25519
from governance.policy import (
    NO_POLICY_APPLIED,
    REQUESTER_MODE,
    ActivePolicy,
    Policy,
    PolicyMode,
)
from governance.proof import chained_decision
from governance.rules import Applied, Rejection, decide
from governance.trust import Principal, authorize, void_grant_reason

#: The worker's own actor: its expiries are the only unsigned decisions of a signed
#: deployment.
SYSTEM_ACTOR_ID = "system"

#: The request fields the stored row must agree on with the request re-execution derives:
#: all of them (what is to be changed as much as whether it was approved).
COMPARED_FIELDS = (
    "status",
    "revision",
    "pending_reason",
    "approval_requirements",
    "expires_at",
    "policy",
    "metadata",
    "state_id",
    "state_type",
    "mutation_type",
    "intent",
    "context",
    "expected_state_version",
    "created_at",
    "updated_at",
)
#: The compared fields that are instants (compared as instants, whatever their spelling).
_INSTANTS = frozenset({"expires_at", "created_at", "updated_at"})


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One row of the registry's audit: what changed (``action``), for whom, and when."""

    at: datetime
    action: str
    actor_id: str | None
    key_id: str | None
    details: Mapping[str, Any]


@dataclass(slots=True)
class _Timeline:
    """Values by instant: the value at ``t`` is the last one set strictly before ``t``."""

    times: list[datetime] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def set(self, at: datetime, value: Any) -> None:
        self.times.append(at)
        self.values.append(value)

    def at(self, instant: datetime) -> Any:
        index = bisect.bisect_left(self.times, instant)
        return self.values[index - 1] if index else None


class RegistryHistory:
    """The registry replayed from its audit: every actor and key as it stood at any instant.

    Registry changes and decisions are ordered by the database (a change is stamped under a
    lock that every guarded transaction holds while it decides), so the registry a decision
    was made under is every change stamped before the decision's time.
    """

    def __init__(self, changes: Iterable[RegistryChange]) -> None:
        self._actors: dict[str, _Timeline] = {}
        self._keys: dict[str, _Timeline] = {}
        states: dict[str, dict[str, Any] | None] = {}
        keys: dict[str, KeyRecord] = {}
        for change in sorted(changes, key=lambda c: c.at):
            if change.action == "actor_added" and change.actor_id is not None:
                states[change.actor_id] = dict(change.details)
            elif change.action == "actor_updated" and change.actor_id is not None:
                state = dict(states.get(change.actor_id) or {})
                for name, delta in change.details.items():
                    if isinstance(delta, Mapping) and "to" in delta:
                        state[name] = delta["to"]
                states[change.actor_id] = state
            elif change.action == "actor_deleted" and change.actor_id is not None:
                states[change.actor_id] = None
            elif change.action == "key_added" and change.key_id and change.actor_id:
                algorithm = change.details.get("algorithm")
                keys[change.key_id] = KeyRecord(
                    change.key_id,
                    change.actor_id,
                    str(change.details.get("public_key")),
                    None,
                    str(change.details.get("scheme") or SCHEME_ED25519),
                    algorithm if isinstance(algorithm, int) else None,
                )
            elif change.action == "key_revoked" and change.key_id in keys:
                keys[change.key_id] = replace(keys[change.key_id], revoked_at=change.at)
            else:
                continue
            if change.actor_id is not None and change.action.startswith("actor_"):
                timeline = self._actors.setdefault(change.actor_id, _Timeline())
                timeline.set(change.at, states[change.actor_id])
            if change.key_id is not None and change.key_id in keys:
                self._keys.setdefault(change.key_id, _Timeline()).set(
                    change.at, keys[change.key_id]
                )

    def principal_at(self, actor_id: str, instant: datetime) -> Principal | None:
        """The registered actor ``actor_id`` as it stood just before ``instant`` (None when
        it was not registered)."""
        timeline = self._actors.get(actor_id)
        state = timeline.at(instant) if timeline is not None else None
        if state is None:
            return None
        try:
            actor_type = ActorType(state.get("type") or ActorType.USER)
        except ValueError:
            actor_type = ActorType.USER
        return Principal(
            actor_id=actor_id,
            name=state.get("name"),
            type=actor_type,
            roles=frozenset(state.get("roles") or ()),
            groups=frozenset(state.get("groups") or ()),
            active=bool(state.get("active", True)),
        )

    def key_at(self, key_id: str, instant: datetime) -> KeyRecord | None:
        """Key ``key_id`` as registered just before ``instant`` (revoked or not), or None."""
        timeline = self._keys.get(key_id)
        record: KeyRecord | None = timeline.at(instant) if timeline is not None else None
        return record

    def key_ids_of(self, actor_id: str) -> list[str]:
        """Every key ever registered for ``actor_id``."""
        return sorted(
            key_id
            for key_id, timeline in self._keys.items()
            if timeline.values and timeline.values[0].actor_id == actor_id
        )


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A version of the approval policy, compiled, with when it took effect."""

    version: int
    applied_at: datetime
    policy: Policy


class PolicyHistory:
    """Which approval policy version was in effect at any instant."""

    def __init__(self, versions: Iterable[PolicyVersion]) -> None:
        ordered = sorted(versions, key=lambda v: v.applied_at)
        self._times = [v.applied_at for v in ordered]
        self._versions = ordered

    def mode_at(self, instant: datetime) -> PolicyMode:
        """The mode a submit decided at ``instant`` met in required mode."""
        index = bisect.bisect_left(self._times, instant)
        if not index:
            return NO_POLICY_APPLIED
        current = self._versions[index - 1]
        return ActivePolicy(version=current.version, policy=current.policy)


# --------------------------------------------------------------------------- the deployment


@dataclass(frozen=True, slots=True)
class Deployment:
    """How the deployment decided: signed commands (the default) or development mode, the
    approval policy required (the default) or requester mode, and what a signed command must
    say (its audience, its age)."""

    signed: bool = True
    policy_required: bool = True
    commands: CommandPolicy = field(
        default_factory=lambda: CommandPolicy(DEFAULT_AUDIENCE, DEFAULT_MAX_AGE)
    )


# --------------------------------------------------------------------------- re-execution


@dataclass(frozen=True, slots=True)
class KeptCommand:
    """The command kept for one revision: as received (with its ``auth``), and the key the
    worker recorded it verified with (None: unsigned)."""

    revision: int
    command_id: str
    key_id: str | None
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Difference:
    """Where re-execution and the stored history part: the revision and what differs."""

    revision: int | None
    message: str
    command_id: str | None = None


@dataclass(slots=True)
class Replay:
    """What re-executing one request gave: the request as derived after each revision
    (with its decision time), and every difference from what is stored."""

    request_id: str
    states: list[tuple[datetime, MutationRequest]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def request(self) -> MutationRequest | None:
        """The request as derived from the last revision that re-executed."""
        return self.states[-1][1] if self.states else None

    def at(self, instant: datetime) -> MutationRequest | None:
        """The request as derived at ``instant`` (its last revision decided by then)."""
        found = None
        for decided_at, request in self.states:
            if decided_at > instant:
                break
            found = request
        return found


#: Given a request id and an instant, that request as it stood then (for ``supersede``).
SupersedingLookup = Callable[[str, datetime], MutationRequest | None]


def _no_superseding(request_id: str, instant: datetime) -> MutationRequest | None:
    return None


def reexecute(
    request_id: str,
    kept: Sequence[KeptCommand],
    stored: Mapping[int, Sequence[Mapping[str, Any]]],
    registry: RegistryHistory,
    policies: PolicyHistory,
    deployment: Deployment = Deployment(),
    superseding_at: SupersedingLookup = _no_superseding,
) -> Replay:
    """Derive ``request_id`` again, revision by revision, from its ``kept`` commands.

    ``stored`` are its stored decisions by revision (each in
    :func:`governance.codec.decision_to_dict`'s form, or a stored row with those keys): the
    decision time of a revision is theirs, and the decisions re-execution gives must equal
    them. Re-execution stops at the first revision that differs (what follows it has no
    derivation to compare with).
    """
    replay = Replay(request_id)
    current: MutationRequest | None = None
    previous_time: datetime | None = None
    signers: dict[str, str | None] = {}
    for entry in sorted(kept, key=lambda k: k.revision):

        def differs(message: str, entry: KeptCommand = entry) -> Replay:
            replay.differences.append(Difference(entry.revision, message, entry.command_id))
            return replay

        rows = stored.get(entry.revision, ())
        if not rows:
            return differs("a command is kept for this revision, but no decision")
        now = _decision_time(rows[0])
        if now is None:
            return differs("its decisions have no decision time")
        if previous_time is not None and now < previous_time:
            return differs("decided before the revision it follows")
        try:
            command = parse_command(dict(entry.payload))
        except InvalidCommand as exc:
            return differs(f"the kept command is not a valid command: {exc}")
        if command.request_id != request_id:
            return differs(f"the kept command is for request {command.request_id}")

        judged = _authenticated(entry, command, current, now, registry, deployment)
        if isinstance(judged, str):
            return differs(judged)
        command, principal = judged
        groups = principal.groups if principal is not None else frozenset()
        superseding = None
        if command.type is CommandType.SUPERSEDE:
            successor = getattr(command.args, "superseding_request_id", None)
            if isinstance(successor, str) and successor != request_id:
                superseding = superseding_at(successor, now)
        outcome = decide(
            current,
            command,
            now,
            superseding,
            groups=groups,
            policy=_policy_mode(command, now, policies, deployment),
            void_grants=_void_grants(current, command, now, registry, deployment, signers),
        )
        if isinstance(outcome, Rejection):
            return differs(
                f"the kept command would have been refused ({outcome.code.value}: "
                f"{outcome.message}), yet decisions were stored for it"
            )
        if outcome.request.revision != entry.revision:
            return differs(
                f"re-executed, the command gives revision {outcome.request.revision}, "
                f"not {entry.revision}"
            )
        problem = _compare_decisions(request_id, entry, command, outcome, now, rows)
        if problem is not None:
            return differs(problem)
        if command.type is CommandType.APPROVE_REQUIREMENT:
            signers[command.actor.id] = entry.key_id
        current = outcome.request
        previous_time = now
        replay.states.append((now, current))
    return replay


def compare_row(replay: Replay, row: Mapping[str, Any]) -> list[Difference]:
    """How the stored request ``row`` (wire form) differs from the request re-execution
    derived: every field, what is to be changed (state, mutation, intent, context) as much as
    where it stands (status, revision, requirements and their grants, pending reason,
    expiry, policy, metadata)."""
    derived = replay.request
    if derived is None:
        return []
    revision = derived.revision
    expected = request_to_dict(derived)
    found = []
    for name in COMPARED_FIELDS:
        mine, theirs = expected.get(name), row.get(name)
        if name in _INSTANTS:
            mine, theirs = _instant(mine), _instant(theirs)
        if mine != theirs:
            found.append(
                Difference(
                    revision,
                    f"the stored request's {name} is {_shown(theirs)}, re-execution gives "
                    f"{_shown(mine)}",
                )
            )
    return found


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return timestamp_from_wire(value)
        except ValueError:
            return None
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _decision_time(row: Mapping[str, Any]) -> datetime | None:
    value = row.get("occurred_at")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return timestamp_from_wire(value)
        except ValueError:
            return None
    return None


def _authenticated(
    entry: KeptCommand,
    command: Command,
    current: MutationRequest | None,
    now: datetime,
    registry: RegistryHistory,
    deployment: Deployment,
) -> tuple[Command, Principal | None] | str:
    """The command as the worker decided it (its actor as the registry named it) and the
    principal whose roles and groups counted, or why the worker could not have applied it."""
    actor_id = command.actor.id
    if entry.key_id is None:
        if actor_id == SYSTEM_ACTOR_ID:
            if command.type is not CommandType.EXPIRE:
                return "an unsigned command of the system actor that is not an expiry"
            if (
                current is None
                or current.status is not Status.PENDING
                or current.expires_at is None
                or current.expires_at > now
            ):
                return (
                    "an unsigned expiry of a request that was not pending past its expiry "
                    "at the decision time"
                )
            return command, None
        if deployment.signed:
            return (
                "an unsigned decision in a signed deployment (only the worker's own expiries "
                "are unsigned)"
            )
        # Development mode: the actor as asserted, groups from the registry, no roles.
        return command, registry.principal_at(actor_id, now)
    if not deployment.signed:
        # A development-mode worker ignores any auth member and keeps no key.
        return f"kept as signed with key {entry.key_id} by a deployment in development mode"
    if actor_id == SYSTEM_ACTOR_ID:
        return "the system actor is internal to the worker and cannot be sent"
    auth = entry.payload.get("auth")
    if not isinstance(auth, Mapping) or auth.get("key_id") != entry.key_id:
        return f"kept as signed with key {entry.key_id}, which its auth member does not name"
    principal = registry.principal_at(actor_id, now)
    proved = authenticate(
        entry.payload,
        command,
        registry.key_at(entry.key_id, now),
        principal,
        deployment.commands,
        now,
    )
    if isinstance(proved, Rejection):
        return (
            f"the kept command would have been refused (unauthenticated: {proved.message}), "
            "yet decisions were stored for it"
        )
    command = replace(command, actor=Actor(proved.actor_id, name=proved.name, type=proved.type))
    refused = authorize(command, proved, current)
    if refused is not None:
        return (
            f"the kept command would have been refused ({refused.code.value}: "
            f"{refused.message}), yet decisions were stored for it"
        )
    return command, proved


def _policy_mode(
    command: Command, now: datetime, policies: PolicyHistory, deployment: Deployment
) -> PolicyMode:
    if command.type is not CommandType.SUBMIT or not deployment.policy_required:
        return REQUESTER_MODE
    return policies.mode_at(now)


def _void_grants(
    current: MutationRequest | None,
    command: Command,
    now: datetime,
    registry: RegistryHistory,
    deployment: Deployment,
    signers: Mapping[str, str | None],
) -> dict[tuple[str, str], str]:
    """The recorded grants that no longer stood at ``now``, as the worker judged them."""
    if current is None or command.type is not CommandType.APPROVE_REQUIREMENT:
        return {}
    void: dict[tuple[str, str], str] = {}
    for requirement in current.approval_requirements:
        group = requirement.approver_group
        if group is None or requirement.status is not ApprovalStatus.PENDING:
            continue
        for grant in requirement.grants:
            key_id = signers.get(grant.actor_id)
            key = registry.key_at(key_id, now) if key_id is not None else None
            why = void_grant_reason(
                group,
                grant.actor_id,
                registry.principal_at(grant.actor_id, now),
                key_id,
                deployment.signed and key is not None and key.revoked_at is not None,
            )
            if why is not None:
                void[(requirement.approval_id, grant.actor_id)] = why
    return void


def _compare_decisions(
    request_id: str,
    entry: KeptCommand,
    command: Command,
    outcome: Applied,
    now: datetime,
    rows: Sequence[Mapping[str, Any]],
) -> str | None:
    body = applied_event(command, outcome, event_id="re-executed", occurred_at=now)
    derived = body["decisions"]
    if len(derived) != len(rows):
        return (
            f"re-executed, the command gives {len(derived)} decision(s) "
            f"({_kinds(derived)}); {len(rows)} are stored ({_kinds(rows)})"
        )
    for position, (mine, theirs) in enumerate(zip(derived, rows, strict=True), start=1):
        expected = chained_decision(request_id, entry.revision, position, entry.command_id, mine)
        found = chained_decision(request_id, entry.revision, position, entry.command_id, theirs)
        if expected != found:
            fields = sorted(
                name for name in set(expected) | set(found) if expected.get(name) != found.get(name)
            )
            detail = "; ".join(
                f"{name} is {_shown(found.get(name))}, re-execution gives "
                f"{_shown(expected.get(name))}"
                for name in fields
            )
            return f"decision {entry.revision}/{position} differs: {detail}"
    return None


def _kinds(decisions: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{d.get('category')}.{d.get('type')}" for d in decisions) or "none"
