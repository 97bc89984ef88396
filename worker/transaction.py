"""The guarded transaction: the one path every command takes.

validate → idempotency lookup → authentication (the signature against the registered key)
→ ``SELECT ... FOR UPDATE`` → existence → authorization (the roles table) → revision check →
the core's pure rule → guarded write (request, chained decisions, the command's proof, ledger
row, outbox row) → commit. The keys and actors are read in the first round trip, beside the
locks.

The ledger belongs to its signer: a ``command_id`` is looked up and recorded in the namespace
of the actor that signed it (:func:`namespace_of`), and only a command whose signature
verified claims its entry, or its place among the commands of its run; a proved signer's
refusal is recorded like any outcome, so the same command sent again is answered the same.

It takes a list of commands: a single command is a list of one, and batch mode hands it
many, which then share the transaction's two round trips and its one commit. Each command is
decided against the request as the previous command of the same list left it, exactly as if
they had come one after another.

Called on a connection in autocommit mode it is its own transaction; called inside an open
transaction (an expiry sweep) it runs in a savepoint of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from governance.authentication import (
    SIGNED,
    KeyRecord,
    Trust,
    principal_from_row,
    prove_signer,
    refuse_standing,
)
from governance.codec import (
    actor_from_dict,
    actor_to_dict,
    intent_from_dict,
    policy_reference_from_dict,
    requirement_from_dict,
)
from governance.commands import (
    REQUEST_ID_PATTERN,
    Command,
    CommandType,
    InvalidCommand,
    SupersedeArgs,
    command_digest,
    command_id_of,
    parse_actor,
    parse_command,
    payload_hash,
)
from governance.events import (
    APPLIED,
    with_sequence,
)
from governance.model import Actor, MutationRequest, PendingReason, RequestContext, Status
from governance.policy import (
    NO_POLICY_APPLIED,
    REQUESTER_MODE,
    ActivePolicy,
    Policy,
    PolicyMode,
)
from governance.policy_document import policy_from_document
from governance.proof import command_sha256
from governance.rules import Applied, Rejection, RejectionCode, decide, requests_to_lock
from governance.trust import Principal, authorize, void_grant_reason
from worker import sql
from worker.errors import InfrastructureError, TransientConflict, translate
from worker.writes import EventWrite, LedgerEntry, RunWrites

#: Reruns of a transaction that lost a benign race (see ``TransientConflict``).
MAX_ATTEMPTS = 5

#: The worker's own actor: its commands (expiry) are built inside the worker, never sent.
SYSTEM_ACTOR_ID = "system"

#: The ledger's namespace of every sent command in development mode: an asserted actor
#: proves nothing, so all senders share one. (Signed mode: the proved signer's actor id; the
#: worker's own commands: :data:`SYSTEM_ACTOR_ID`, which no sender can prove.)
SHARED_NAMESPACE = ""


class NotACommand(ValueError):
    """A message without a usable ``command_id``: it cannot be answered, only dead-lettered."""


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """A command's outcome event as the log holds it, with what its publisher must know."""

    event: dict[str, Any]
    routing_key: str
    sequence: int
    #: True when the ledger already knew the command and this is its recorded outcome.
    replayed: bool
    #: The request whose event stream this event belongs to (the outbox row's), if any.
    request_id: str | None = None
    #: Whether, when the request was locked, it had events nobody had published yet (a writer
    #: killed before its publish, or one publishing right now). Such an event must not be
    #: published before them; an event of a request without such a backlog may go out at once.
    behind_backlog: bool = False

    @property
    def applied(self) -> bool:
        return bool(self.event["event_type"] == APPLIED)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A message, validated once however often its transaction is rerun."""

    payload: dict[str, Any]
    command_id: str
    digest: str
    command: Command | None
    invalid: InvalidCommand | None


@dataclass(frozen=True, slots=True)
class _Boundary:
    """How one run starts and ends: a transaction of its own, or a savepoint inside the
    caller's transaction."""

    begin: str
    commit: str
    undo: str


_OWN_TRANSACTION = _Boundary("BEGIN", "COMMIT", "ROLLBACK")
_SAVEPOINT = _Boundary(
    "SAVEPOINT guarded_commands",
    "RELEASE SAVEPOINT guarded_commands",
    "ROLLBACK TO SAVEPOINT guarded_commands",
)

Result = StoredOutcome | NotACommand


def apply_command(
    conn: psycopg.Connection[Any], payload: object, trust: Trust = SIGNED
) -> StoredOutcome:
    """Apply one command message and return its outcome, recorded in the same transaction.

    Raises :class:`NotACommand` for a message that has no usable ``command_id`` and
    :class:`InfrastructureError` for faults worth retrying; every other outcome, rejections
    included, is a returned value.
    """
    (result,) = apply_commands(conn, [payload], trust)
    if isinstance(result, NotACommand):
        raise result
    return result


def apply_commands(
    conn: psycopg.Connection[Any], payloads: Sequence[object], trust: Trust = SIGNED
) -> list[Result]:
    """Apply command messages in one transaction; their outcomes in the same order.

    ``trust`` says how their senders are judged (signed commands by default).

    All are committed together or none is. Raises :class:`InfrastructureError` for faults
    worth retrying (nothing was committed then).
    """
    prepared = [_prepare(payload) for payload in payloads]
    for _ in range(MAX_ATTEMPTS):
        try:
            return _run(conn, prepared, trust)
        except TransientConflict:
            continue
        except psycopg.Error as exc:
            translated = translate(exc)
            if isinstance(translated, TransientConflict):
                continue
            raise translated from exc
    raise InfrastructureError(f"{len(payloads)} command(s) kept losing races")


def _prepare(payload: object) -> _Prepared | NotACommand:
    command_id = command_id_of(payload)
    if command_id is None:
        return NotACommand("the message is not an object with a usable command_id")
    assert isinstance(payload, dict)
    try:
        command = parse_command(payload)
    except InvalidCommand as exc:
        # No parsed form to judge by: only the very same spelling is the same command.
        return _Prepared(payload, command_id, payload_hash(payload), None, exc)
    # Judged by meaning, so that a re-send spelled another way still finds its outcome.
    return _Prepared(payload, command_id, command_digest(command), command, None)


def _run(
    conn: psycopg.Connection[Any], prepared: Sequence[_Prepared | NotACommand], trust: Trust
) -> list[Result]:
    commands = [p for p in prepared if isinstance(p, _Prepared)]
    valid = [p.command for p in commands if p.command is not None]
    # Who each command says it is, and (signed mode) the key it says it signed with.
    identities = sorted(
        {
            (c.actor.id, c.auth.key_id if trust.signed and c.auth and c.auth.key_id else None)
            for c in valid
        },
        key=lambda pair: (pair[0], pair[1] or ""),
    )
    if trust.internal:
        identities = []
    # Sorted, so that every transaction takes its locks in one global order and two batches
    # can never deadlock on each other. A message that failed validation but names a request
    # locks it too: its rejection is one of that request's events, ordered among the others.
    request_ids = sorted({rid for p in commands for rid in _requests_of(p)})
    boundary = (
        _OWN_TRANSACTION if conn.info.transaction_status is TransactionStatus.IDLE else _SAVEPOINT
    )
    try:
        with conn.pipeline() as pipeline:
            # Round trip 1: take the locks, then read what they protect.
            conn.execute(boundary.begin)
            conn.execute(sql.REGISTRY_SHARED)
            clock = conn.execute(sql.CLOCK)
            if request_ids:
                # The advisory locks also serialise commands on a request that does not exist
                # yet (a submit racing another submit or an approve), which FOR UPDATE cannot.
                conn.execute(sql.LOCK_REQUEST_KEYS, {"request_ids": request_ids})
                locked = conn.execute(sql.LOCK_REQUESTS, {"request_ids": request_ids})
                backlog = conn.execute(sql.WITH_BACKLOG, {"request_ids": request_ids})
            # After the locks: the run's events are numbered (and signed) as they are built.
            drawn = conn.execute(sql.DRAW_SEQUENCES, {"count": len(commands)})
            claims = [
                (namespace, p.command_id)
                for p in commands
                if (namespace := namespace_of(p, trust)) is not None
            ]
            ledger = conn.execute(
                sql.LOOKUP,
                {
                    "namespaces": [namespace for namespace, _ in claims],
                    "command_ids": [command_id for _, command_id in claims],
                },
            )
            reads_policy = trust.policy_required and any(
                c.type is CommandType.SUBMIT for c in valid
            )
            if reads_policy:
                active = conn.execute(sql.ACTIVE_POLICY)
            grants_complete = any(c.type is CommandType.APPROVE_REQUIREMENT for c in valid)
            if grants_complete:
                standing = conn.execute(sql.GRANT_STANDING, {"request_ids": request_ids})
            if identities:
                registered = conn.execute(
                    sql.PRINCIPALS_AND_KEYS,
                    {
                        "actor_ids": [actor_id for actor_id, _ in identities],
                        "key_ids": [key_id for _, key_id in identities],
                    },
                )
            pipeline.sync()
            now = _one(clock)[0]
            requests: dict[str, MutationRequest | None] = {}
            heads: dict[str, str | None] = {}
            behind: set[str] = set()
            if request_ids:
                for row in locked.fetchall():
                    requests[row[0]] = request_from_row(row[:-1])
                    heads[row[0]] = row[-1]
                behind = {row[0] for row in backlog.fetchall()}
            known = {(row[0], row[1]): row[2:] for row in ledger.fetchall()}
            keys: dict[str, KeyRecord] = {}
            principals: dict[str, Principal] = {}
            for row in registered.fetchall() if identities else ():
                if row[1]:
                    principals[row[0]] = principal_from_row((row[0], *row[2:7]))
                if row[7] is not None:
                    keys[row[7]] = KeyRecord(*row[7:13])

            policy: PolicyMode = REQUESTER_MODE
            if reads_policy:
                policy = _policy_mode(conn, pipeline, active.fetchone())
            void = _void_grants(standing.fetchall(), trust) if grants_complete else {}

            plan = _Plan(now, requests, behind, known, trust, keys, principals, heads, policy, void)
            plan.writes.sequences = sorted(row[0] for row in drawn.fetchall())
            for item in prepared:
                plan.decide(item)

            # Round trip 2: every write in one statement, then the commit.
            written = (
                conn.execute(sql.WRITE_RUN, plan.writes.params()) if plan.writes.events else None
            )
            conn.execute(boundary.commit)
            pipeline.sync()
            sequences = {} if written is None else dict(written.fetchall())
    except BaseException:
        _undo(conn, boundary)
        raise
    return plan.results(sequences)


def namespace_of(item: _Prepared, trust: Trust) -> str | None:
    """The ledger namespace a message would claim its ``command_id`` in, if its sender is
    proved (None: a message that can never be recorded, one that failed validation in signed
    mode). In signed mode a ``command_id`` is unique per signer, so nobody can occupy
    another actor's: the namespace is the actor the command names, which is who signed it
    whenever it is recorded at all."""
    if trust.internal:
        return SYSTEM_ACTOR_ID
    if not trust.signed:
        return SHARED_NAMESPACE
    return None if item.command is None else item.command.actor.id


def _void_grants(
    rows: Sequence[tuple[Any, ...]], trust: Trust
) -> dict[str, dict[tuple[str, str], str]]:
    """The recorded grants of the locked requests that no longer stand, by request (from
    :data:`worker.sql.GRANT_STANDING`); a key's revocation counts in signed mode only."""
    void: dict[str, dict[tuple[str, str], str]] = {}
    for row in rows:
        request_id, approval_id, group, actor_id, registered, active, groups, key_id = row[:8]
        revoked_at = row[8]
        principal = (
            principal_from_row((actor_id, None, "user", (), groups, active)) if registered else None
        )
        why = void_grant_reason(
            group, actor_id, principal, key_id, trust.signed and revoked_at is not None
        )
        if why is not None:
            void.setdefault(request_id, {})[(approval_id, actor_id)] = why
    return void


#: Policies compiled in this process, by the sha256 of their document: a version is compiled
#: once, and a database whose version N is another document (a test's, another deployment's
#: on the same worker code) can never be served a wrong one.
_compiled: dict[str, Policy] = {}


def _policy_mode(
    conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline, active: tuple[Any, ...] | None
) -> PolicyMode:
    """The approval policy this run's submits are decided under (required mode)."""
    if active is None:
        return NO_POLICY_APPLIED
    version, sha256 = active
    policy = _compiled.get(sha256)
    if policy is None:
        # A version this process has not seen yet: one more round trip, once per version.
        document = conn.execute(sql.POLICY_DOCUMENT, {"version": version})
        pipeline.sync()
        row = document.fetchone()
        assert row is not None
        policy = policy_from_document(row[0])
        if policy.sha256 != sha256:
            # The stored document is not the one whose hash the version records: deciding
            # under it would govern requests by a policy nobody applied.
            raise InfrastructureError(
                f"approval policy version {version} does not match its recorded sha256"
            )
        _compiled[sha256] = policy
    return ActivePolicy(version=version, policy=policy)


@dataclass(frozen=True, slots=True)
class _Pending:
    event: EventWrite


@dataclass(frozen=True, slots=True)
class _SameAs:
    index: int


class _Plan:
    """The decisions of one run, taken in order against the locked rows and the ledger."""

    def __init__(
        self,
        now: datetime,
        requests: dict[str, MutationRequest | None],
        behind: set[str],
        known: dict[tuple[str, str], tuple[Any, ...]],
        trust: Trust,
        keys: dict[str, KeyRecord],
        principals: dict[str, Principal],
        heads: dict[str, str | None],
        policy: PolicyMode = REQUESTER_MODE,
        void: dict[str, dict[tuple[str, str], str]] | None = None,
    ) -> None:
        self.now = now
        #: By request: the recorded grants that no longer stand, and why.
        self.void = void or {}
        #: How this run's submits take their approval requirements.
        self.policy = policy
        self.requests = requests
        self.behind = behind
        self.known = known
        self.trust = trust
        self.keys = keys
        self.principals = principals
        #: The head of each locked request's decision chain, as this run leaves it.
        self.heads = heads
        self.writes = RunWrites()
        #: Per input: a ready result, a write of this run, or a repeat of an earlier input.
        self._slots: list[Result | _Pending | _SameAs] = []
        #: (namespace, command_id) → (digest, slot) of the command of this run that claimed
        #: it: only a command whose sender is proved claims one.
        self._seen: dict[tuple[str, str], tuple[str, int]] = {}

    def decide(self, item: _Prepared | NotACommand) -> None:
        if isinstance(item, NotACommand):
            self._slots.append(item)
            return
        namespace = namespace_of(item, self.trust)
        claim = None if namespace is None else (namespace, item.command_id)
        seen = None if claim is None else self._seen.get(claim)
        recorded = None if claim is None else self.known.get(claim)
        # The same command again (by meaning) is answered as it was, whoever re-sends it.
        if seen is not None and seen[0] == item.digest:
            self._slots.append(_SameAs(seen[1]))
            return
        if seen is None and recorded is not None and recorded[0] == item.digest:
            _, sequence, routing_key, body, request_id = recorded
            self._slots.append(
                StoredOutcome(
                    with_sequence(body, sequence),
                    routing_key,
                    sequence,
                    True,
                    request_id=request_id,
                    behind_backlog=request_id in self.behind,
                )
            )
            return
        id_taken = seen is not None or recorded is not None
        readable = _readable_request_id(item.payload)
        if item.invalid is not None:
            # Recorded where senders are not proved (development mode), so a redelivery gets
            # the same answer; unless the id is taken by another command, which keeps its own
            # record. In signed mode nothing proves who sent it: answered, never recorded.
            rejection = Rejection(RejectionCode.INVALID_COMMAND, item.invalid.message)
            record = claim is not None and not id_taken
            self._reject(item, readable, rejection, record=record, claim=claim)
            return
        command = item.command
        assert command is not None
        principal = self.principals.get(command.actor.id)
        standing: Rejection | None = None
        if self.trust.signed and not self.trust.internal:
            proved = prove_signer(
                item.payload,
                command,
                self.keys.get(command.auth.key_id) if command.auth is not None else None,
                principal,
                self.trust.policy,
                self.now,
            )
            if isinstance(proved, Rejection):
                # Its signature proves nobody: it claims neither the ledger entry nor this
                # run's slot, so a genuine command with its command_id still applies.
                self._reject(item, readable, proved, record=False)
                return
            principal = proved
            # Who acted is what the registry says, not what the message says.
            command = replace(
                command, actor=Actor(proved.actor_id, name=proved.name, type=proved.type)
            )
            standing = refuse_standing(command, proved, self.now)
        if id_taken:
            rejection = Rejection(
                RejectionCode.DUPLICATE_COMMAND,
                f"command_id {item.command_id} was already used for a different command",
            )
            event = self._rejection(
                item,
                self._clock(readable),
                None,
                rejection,
                record=False,
                authenticated=self._proved,
                actor=command.actor,
            )
            self._slots.append(_Pending(event))
            return
        assert claim is not None
        self._seen[claim] = (item.digest, len(self._slots))
        current = self.requests.get(command.request_id)
        now = self._clock(command.request_id)
        if standing is not None:
            # Signed by its actor, refused for what may change (a deactivated actor, a clock
            # behind its issued_at): recorded, so sending it again later is answered the same.
            event = self._rejection(
                item, now, None, standing, record=True, authenticated=True, actor=command.actor
            )
            self._slots.append(_Pending(event))
            return
        outcome = self._authorize(command, principal, current) or decide(
            current,
            command,
            now,
            superseding=self._superseding(command),
            groups=principal.groups if principal is not None else frozenset(),
            policy=self.policy,
            void_grants=self.void.get(command.request_id, {}),
        )
        if isinstance(outcome, Applied):
            self.requests[command.request_id] = outcome.request
            event, self.heads[command.request_id] = self.writes.applied(
                command,
                outcome,
                digest=item.digest,
                now=now,
                authenticated=self._proved,
                locked=current,
                chain_head=self.heads.get(command.request_id),
                signed_command=item.payload,
                ledger=self._ledger_entry(claim, command),
                command_sha256=None if self._proved else command_sha256(item.payload),
            )
        else:
            event = self._rejection(
                item,
                now,
                current,
                outcome,
                record=True,
                authenticated=self._proved,
                actor=command.actor,
            )
        self._slots.append(_Pending(event))

    def _ledger_entry(self, claim: tuple[str, str], command: Command | None) -> LedgerEntry:
        """Where a recorded outcome is kept, and until when at least: the ledger window from
        now, and for a command that says when it was issued, until it is too old to be
        accepted (one issued ahead of the clock outlives the window by as much)."""
        window = self.trust.ledger_window
        keep_until: datetime | None = None
        if window is not None:
            keep_until = self.now + window
            issued_at = command.issued_at if command is not None else None
            if issued_at is not None:
                keep_until = max(keep_until, issued_at + self.trust.policy.max_age)
        return LedgerEntry(namespace=claim[0], keep_until=keep_until)

    @property
    def _proved(self) -> bool:
        """Whether this run's applied outcomes are of commands whose authors are proved."""
        return self.trust.signed

    def _reject(
        self,
        item: _Prepared,
        request_id: str | None,
        rejection: Rejection,
        *,
        record: bool,
        claim: tuple[str, str] | None = None,
    ) -> None:
        """Answer a command that never reached the rules (invalid, unproved): its author was
        not proved, whatever the mode. A recorded one claims its ``command_id``."""
        now = self._clock(request_id)
        if record:
            assert claim is not None
            self._seen[claim] = (item.digest, len(self._slots))
        event = self._rejection(item, now, None, rejection, record=record, authenticated=False)
        self._slots.append(_Pending(event))

    def _rejection(
        self,
        item: _Prepared,
        now: datetime,
        current: MutationRequest | None,
        rejection: Rejection,
        *,
        record: bool,
        authenticated: bool,
        actor: Actor | None = None,
    ) -> EventWrite:
        """The write of a rejection. ``actor`` is who sent the command as far as the worker
        knows (the registry's actor, once authenticated); otherwise what can be read of the
        message."""
        command_type, request_id, readable_actor = _readable_parts(item.payload)
        namespace = namespace_of(item, self.trust)
        return self.writes.rejected(
            command_id=item.command_id,
            digest=item.digest,
            command_type=command_type,
            request_id=request_id,
            actor=actor if actor is not None else readable_actor,
            rejection=rejection,
            current=current,
            now=now,
            authenticated=authenticated,
            ledger=self._ledger_entry((namespace, item.command_id), item.command)
            if record and namespace is not None
            else None,
            # Whoever sent it was not proved: its answer names the very message it answers.
            command_sha256=None if authenticated else command_sha256(item.payload),
        )

    def _authorize(
        self, command: Command, principal: Principal | None, current: MutationRequest | None
    ) -> Rejection | None:
        """The roles table (signed mode), and the rule that nobody may act as the worker."""
        if self.trust.internal:
            return None
        if command.actor.id == SYSTEM_ACTOR_ID:
            return Rejection(
                RejectionCode.FORBIDDEN,
                "the system actor is internal to the worker and cannot be sent",
                expected_revision=command.expected_revision,
            )
        if not self.trust.signed:
            return None
        assert principal is not None
        return authorize(command, principal, current)

    def _clock(self, request_id: str | None) -> datetime:
        """The decision time for a command on ``request_id``: the transaction's clock, but
        never earlier than the request's last change, which a transaction that started
        before and waited for the lock would otherwise undercut."""
        current = self.requests.get(request_id) if request_id is not None else None
        if current is not None and current.updated_at > self.now:
            return current.updated_at
        return self.now

    def _superseding(self, command: Command) -> MutationRequest | None:
        args = command.args
        if isinstance(args, SupersedeArgs):
            return self.requests.get(args.superseding_request_id)
        return None

    def results(self, sequences: Mapping[str, int]) -> list[Result]:
        out: list[Result] = []
        for slot in self._slots:
            if isinstance(slot, StoredOutcome | NotACommand):
                out.append(slot)
            elif isinstance(slot, _SameAs):
                # The same command twice in one run: the second is a redelivery of the first.
                first = out[slot.index]
                assert isinstance(first, StoredOutcome)
                out.append(replace(first, replayed=True))
            else:
                event = slot.event
                sequence = sequences.get(event.event_id)
                if sequence is None:
                    # A guarded write matched no row: should be impossible under the locks.
                    raise TransientConflict("a guarded write matched no row")
                out.append(
                    StoredOutcome(
                        with_sequence(event.body, sequence),
                        event.routing_key,
                        sequence,
                        False,
                        request_id=event.request_id,
                        behind_backlog=event.request_id in self.behind,
                    )
                )
        return out


def _requests_of(item: _Prepared) -> tuple[str, ...]:
    """The requests a message's transaction locks."""
    if item.command is not None:
        return requests_to_lock(item.command)
    readable = _readable_request_id(item.payload)
    return () if readable is None else (readable,)


def _undo(conn: psycopg.Connection[Any], boundary: _Boundary) -> None:
    """Leave the connection as the run found it, if it is still usable at all."""
    if conn.closed or conn.info.transaction_status is TransactionStatus.IDLE:
        return
    # A broken connection cannot be undone; the caller's error says why, the pool discards it.
    with contextlib.suppress(psycopg.Error):
        conn.execute(boundary.undo)


def _one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def _readable_parts(
    payload: Mapping[str, Any],
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """What a rejection can safely echo of a message that may have failed validation."""
    raw_type = payload.get("type")
    command_type = (
        raw_type
        if isinstance(raw_type, str) and raw_type in CommandType._value2member_map_
        else None
    )
    request_id = _readable_request_id(payload)
    try:
        actor: dict[str, Any] | None = actor_to_dict(parse_actor(payload.get("actor")))
    except InvalidCommand:
        actor = None
    return command_type, request_id, actor


def _readable_request_id(payload: Mapping[str, Any]) -> str | None:
    raw = payload.get("request_id")
    return raw if isinstance(raw, str) and REQUEST_ID_PATTERN.fullmatch(raw) else None


def request_from_row(row: tuple[Any, ...]) -> MutationRequest:
    """The request as locked, without its decision history (no rule reads it)."""
    (
        request_id,
        state_id,
        state_type,
        mutation_type,
        intent,
        context,
        status,
        pending_reason,
        requirements,
        revision,
        expected_state_version,
        expires_at,
        created_at,
        updated_at,
        metadata,
        policy,
    ) = row
    return MutationRequest(
        request_id=request_id,
        state_id=state_id,
        state_type=state_type,
        mutation_type=mutation_type,
        intent=intent_from_dict(intent),
        context=RequestContext(
            actor=actor_from_dict(context["actor"]), reason=context.get("reason")
        ),
        status=Status(status),
        pending_reason=PendingReason(pending_reason) if pending_reason else None,
        approval_requirements=tuple(requirement_from_dict(r) for r in requirements),
        revision=revision,
        expected_state_version=expected_state_version,
        expires_at=expires_at,
        created_at=created_at,
        updated_at=updated_at,
        metadata=metadata,
        policy=policy_reference_from_dict(policy),
    )
