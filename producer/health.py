"""How a deployment is doing, read from the broker and the database: what ``governance
status`` reports, usable as a health check.

:func:`read_health` asks the workers (Celery's remote control: ``ping`` and
``active_queues``), the queues (a passive declare: depth and consumers, nothing created), the
outbox (unpublished events and the oldest one's age) and the periodic tasks' last runs, and
says what needs attention: no worker consuming the command queue, dead letters waiting, an
outbox whose oldest unpublished event is older than a threshold, or an approval policy that
submits cannot be decided under (none applied, or one the registry cannot satisfy: the
active version is checked against the registry as it stands, as ``governance policy
check`` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import kombu
import psycopg
from amqp.exceptions import AMQPError, NotFound
from celery import Celery

from governance.policy_document import PolicyError, policy_from_document
from governance.satisfiability import RosterActor, unsatisfiable
from governance.topology import (
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    MAINTENANCE_QUEUE,
    RETRY_QUEUE,
)

#: ``governance status`` exit code: something needs an operator's attention.
EXIT_NEEDS_ATTENTION = 8

#: The queues reported, in this order.
QUEUES = (COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE, DEAD_LETTER_QUEUE)

#: Periodic tasks whose last run is reported (see ``maintenance_runs``).
MAINTENANCE_TASKS = ("relay", "expiry")

OUTBOX = """
SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
FROM outbox_events WHERE published_at IS NULL
"""
ACTIVE_POLICY = """
SELECT version, sha256, document, forced FROM policy_versions ORDER BY version DESC LIMIT 1
"""
#: The registry as the satisfiability check sees it (the worker's registry reads the same).
ROSTER = """
SELECT a.actor_id, a.active, a.roles, a.groups,
       EXISTS (SELECT FROM actor_keys AS k
               WHERE k.actor_id = a.actor_id AND k.revoked_at IS NULL)
FROM actors AS a
"""
#: How many shortfalls of an unsatisfiable policy a problem quotes (the JSON has them all).
QUOTED_SHORTFALLS = 3
#: The deployment's trust mode, where the database records one (migrated by a version
#: that pins it).
HAS_AUTH = "SELECT to_regclass('deployment_settings') IS NOT NULL"
RECORDED_AUTH = "SELECT auth FROM deployment_settings"
LAST_RUNS = """
SELECT task, finished_at, extract(epoch FROM now() - finished_at)::float8, handled
FROM maintenance_runs
"""


class ServiceUnreachable(Exception):
    """The broker or the database cannot be reached or used; the message says which."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"cannot reach the {service}: {reason}")
        self.service = service


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue as the broker has it (``exists`` False: nobody declared it yet)."""

    name: str
    exists: bool
    messages: int
    consumers: int


@dataclass(frozen=True, slots=True)
class WorkerState:
    """A worker that answered, with the queues it consumes and the modes it runs in
    (``auth``: signed or off; ``policy``: required or requester; None where it did not say)."""

    name: str
    queues: tuple[str, ...]
    auth: str | None = None
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRun:
    """When a periodic task last finished (None: never) and what it handled then."""

    task: str
    finished_at: str | None
    age_seconds: float | None
    handled: int | None


@dataclass(frozen=True, slots=True)
class PolicyState:
    """The active approval policy (``version`` None: none applied) and whether the registry
    as it stands satisfies it: each shortfall names a rule, a submitter and what is
    missing. ``error`` says why a stored version could not be read."""

    version: int | None = None
    sha256: str | None = None
    rules: int = 0
    forced: bool = False
    shortfalls: tuple[str, ...] = ()
    error: str | None = None

    @property
    def applied(self) -> bool:
        return self.version is not None

    @property
    def satisfiable(self) -> bool | None:
        """Whether every rule is satisfiable for every submitter (None: no policy)."""
        if self.version is None:
            return None
        return self.error is None and not self.shortfalls

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["shortfalls"] = list(self.shortfalls)
        document["satisfiable"] = self.satisfiable
        return document


@dataclass(frozen=True, slots=True)
class Health:
    """Everything ``governance status`` reports."""

    workers: tuple[WorkerState, ...]
    queues: tuple[QueueState, ...]
    unpublished_events: int
    oldest_unpublished_age_seconds: float | None
    last_runs: tuple[TaskRun, ...]
    #: What needs attention, one sentence each; empty when healthy.
    problems: tuple[str, ...] = field(default=())
    #: The approval policy; None when it was not read.
    policy: PolicyState | None = None
    #: The deployment's trust mode as ``governance migrate`` recorded it; None when the
    #: database records none (not migrated by this version yet).
    auth: str | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems

    def queue(self, name: str) -> QueueState:
        return next(q for q in self.queues if q.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``governance status --json``."""
        document = asdict(self)
        document["healthy"] = self.healthy
        document["problems"] = list(self.problems)
        document["policy"] = None if self.policy is None else self.policy.to_dict()
        return document


def read_health(
    broker_url: str,
    database_url: str,
    *,
    max_outbox_age: float = 60.0,
    inspect_timeout: float = 1.0,
) -> Health:
    """Read the deployment's state; raises :class:`ServiceUnreachable`."""
    queues = tuple(queue_states(broker_url, QUEUES))
    workers = tuple(workers_seen(broker_url, inspect_timeout))
    unpublished, oldest, runs, policy, auth = database_state(database_url)
    health = Health(workers, queues, unpublished, oldest, tuple(runs), policy=policy, auth=auth)
    return replace(health, problems=tuple(problems(health, max_outbox_age)))


def problems(health: Health, max_outbox_age: float) -> list[str]:
    """What needs attention in ``health``."""
    found = []
    if health.queue(COMMANDS_QUEUE).consumers == 0:
        found.append(f"no worker is consuming {COMMANDS_QUEUE}")
    dead = health.queue(DEAD_LETTER_QUEUE).messages
    if dead:
        found.append(f"{dead} dead letter(s) on {DEAD_LETTER_QUEUE} (governance dlq list)")
    oldest = health.oldest_unpublished_age_seconds
    if oldest is not None and oldest > max_outbox_age:
        found.append(
            f"the oldest of {health.unpublished_events} unpublished event(s) is "
            f"{oldest:.0f}s old (threshold {max_outbox_age:g}s): is the relay running, can "
            "the workers publish?"
        )
    found.extend(mode_problems(health.workers, health.auth))
    found.extend(policy_problems(health.policy))
    return found


def mode_problems(workers: tuple[WorkerState, ...], recorded_auth: str | None = None) -> list[str]:
    """The workers that run in a development mode, or in another trust mode than the
    deployment recorded (``recorded_auth``; one started before ``governance migrate --auth``
    changed it): each one's commands are not judged as the deployment's must be."""
    found = []
    for worker in workers:
        if recorded_auth is not None and worker.auth is not None and worker.auth != recorded_auth:
            found.append(
                f"worker {worker.name} runs GOVERNANCE_AUTH={worker.auth} but the deployment's "
                f"trust mode is {recorded_auth} (governance migrate --auth): restart it with "
                f"GOVERNANCE_AUTH={recorded_auth}"
            )
        if worker.auth == "off":
            found.append(
                f"worker {worker.name} runs GOVERNANCE_AUTH=off (development only): it takes "
                "every actor as asserted"
            )
        if worker.policy == "requester":
            found.append(
                f"worker {worker.name} runs GOVERNANCE_POLICY=requester (development only): "
                "requests it accepts take the approvals their requesters ask for"
            )
    return found


def policy_problems(policy: PolicyState | None) -> list[str]:
    """What needs attention in the approval policy's state."""
    if policy is None:
        return []
    if not policy.applied:
        return [
            "no approval policy is applied: workers in the default (required) mode refuse "
            "every submit (governance policy apply FILE)"
        ]
    if policy.error is not None:
        return [f"approval policy version {policy.version} cannot be read: {policy.error}"]
    if not policy.shortfalls:
        return []
    quoted = "; ".join(policy.shortfalls[:QUOTED_SHORTFALLS])
    more = len(policy.shortfalls) - QUOTED_SHORTFALLS
    return [
        f"approval policy version {policy.version} cannot be satisfied by the registry: "
        f"{quoted}" + (f" (and {more} more)" if more > 0 else "")
    ]


def queue_states(broker_url: str, names: Sequence[str]) -> list[QueueState]:
    """Depth and consumers of each queue, by passive declaration (nothing is created)."""
    states = []
    try:
        with kombu.Connection(broker_url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            for name in names:
                try:
                    _, messages, consumers = channel.queue_declare(name, passive=True)
                    states.append(QueueState(name, True, messages, consumers))
                except NotFound:
                    # The broker closed the channel over the unknown queue.
                    channel = connection.channel()
                    states.append(QueueState(name, False, 0, 0))
    except (OSError, AMQPError, kombu.exceptions.KombuError, ConnectionError) as exc:
        raise ServiceUnreachable("broker", str(exc) or type(exc).__name__) from exc
    return states


def workers_seen(broker_url: str, timeout: float) -> list[WorkerState]:
    """The workers that answer a ping within ``timeout``, with the queues they consume."""
    app = Celery("governance-status", broker=broker_url, set_as_current=False)
    try:
        replies = app.control.broadcast("governance_state", reply=True, timeout=timeout)
        answered = {name: reply for each in replies or () for name, reply in each.items()}
    except (OSError, AMQPError, kombu.exceptions.KombuError, ConnectionError) as exc:
        raise ServiceUnreachable("broker", str(exc) or type(exc).__name__) from exc
    finally:
        with contextlib.suppress(Exception):
            app.close()
    return [_worker_state(name, reply) for name, reply in sorted(answered.items())]


def _worker_state(name: str, reply: Any) -> WorkerState:
    if not isinstance(reply, dict) or "queues" not in reply:
        # A worker of a release that does not answer governance_state: seen, modes unknown.
        return WorkerState(name, ())
    queues = tuple(sorted(q.get("name", "") for q in reply.get("queues") or ()))
    return WorkerState(name, queues, reply.get("auth"), reply.get("policy"))


def database_state(
    database_url: str,
) -> tuple[int, float | None, list[TaskRun], PolicyState, str | None]:
    """Unpublished events, the oldest one's age, the periodic tasks' last runs, the
    approval policy checked against the registry, and the recorded trust mode."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(OUTBOX).fetchone()
            auth = _recorded_auth(conn)
            recorded = {r[0]: r for r in conn.execute(LAST_RUNS).fetchall()}
            # One snapshot for the policy and the registry it is checked against.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                active = conn.execute(ACTIVE_POLICY).fetchone()
                roster = [
                    RosterActor(actor_id, active, frozenset(roles), frozenset(groups), has_key)
                    for actor_id, active, roles, groups, has_key in conn.execute(ROSTER)
                ]
    except psycopg.Error as exc:
        raise ServiceUnreachable("database", str(exc).strip().splitlines()[0]) from exc
    assert row is not None
    runs = []
    for task in MAINTENANCE_TASKS:
        if task in recorded:
            _, finished_at, age, handled = recorded[task]
            runs.append(TaskRun(task, _iso(finished_at), round(age, 3), handled))
        else:
            runs.append(TaskRun(task, None, None, None))
    oldest = None if row[1] is None else round(row[1], 3)
    return int(row[0]), oldest, runs, policy_state(active, roster), auth


def _recorded_auth(conn: psycopg.Connection[Any]) -> str | None:
    has = conn.execute(HAS_AUTH).fetchone()
    if not (has and has[0]):
        return None
    row = conn.execute(RECORDED_AUTH).fetchone()
    return None if row is None else str(row[0])


def policy_state(active: tuple[Any, ...] | None, roster: Sequence[RosterActor]) -> PolicyState:
    """The active version's row (version, sha256, document, forced) checked against
    ``roster``."""
    if active is None:
        return PolicyState()
    version, sha256, document, forced = active
    rules = len(document.get("rules") or ()) if isinstance(document, dict) else 0
    state = PolicyState(version=version, sha256=sha256, rules=rules, forced=forced)
    try:
        policy = policy_from_document(document)
    except PolicyError as exc:
        return replace(state, error=str(exc))
    shortfalls = tuple(str(shortfall) for shortfall in unsatisfiable(policy, roster))
    return replace(state, shortfalls=shortfalls)


def _iso(value: datetime) -> str:
    return value.isoformat()
