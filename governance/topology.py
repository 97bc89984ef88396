"""Names of the broker topology the contract fixes, shared by worker and producer.

Plain constants and pure functions, so that every process declares the queues with the same
arguments (RabbitMQ refuses a redeclaration that differs).
"""

from __future__ import annotations

from collections.abc import Mapping

APPLY_COMMAND_TASK = "governance.apply_command"
COMMANDS_QUEUE = "governance.commands"
DEAD_LETTER_QUEUE = "governance.commands.dead"
EVENTS_EXCHANGE = "governance.events"

#: Where a command that failed inside a batch, or keeps failing, waits for its next attempt.
RETRY_QUEUE = "governance.commands.retry"
#: The scheduler's periodic work (expiry sweeps, outbox relay).
MAINTENANCE_QUEUE = "governance.maintenance"
EXPIRE_DUE_TASK = "governance.expire_due"
RELAY_OUTBOX_TASK = "governance.relay_outbox"
APPLY_RETENTION_TASK = "governance.apply_retention"

#: Every queue a worker consumes or parks messages in (for health checks and drains).
WORKER_QUEUES = (COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE, DEAD_LETTER_QUEUE)


#: The deployment a signed command names when none is configured (``GOVERNANCE_AUDIENCE``).
DEFAULT_AUDIENCE = "governance"

#: Header that carries why a message was dead-lettered.
DEAD_LETTER_REASON_HEADER = "x-governance-dead-letter-reason"
#: Header that carries the cause it was dead-lettered for, one of
#: :class:`governance.parking.ParkCause`'s values.
DEAD_LETTER_CAUSE_HEADER = "x-governance-dead-letter-cause"

#: Where the docker-compose services listen on localhost; every process's default.
DEFAULT_DATABASE_URL = "postgresql://governance:governance@localhost:5432/governance"
DEFAULT_BROKER_URL = "amqp://governance:governance@localhost:5672//"

# The command queue keeps the direct exchange of its own name that a plain Celery client
# auto-declares, so any client's ``send_task`` routes to it. Its arguments come from
# :func:`queue_arguments` below and nowhere else: RabbitMQ refuses (PRECONDITION_FAILED) a
# redeclaration whose arguments differ, so every process must declare each queue alike.

#: Replicated queues (Raft): the default. A broker that cannot run them, or clients that
#: redeclare the queues with default arguments, need ``classic``.
QUORUM = "quorum"
CLASSIC = "classic"
QUEUE_TYPES = (QUORUM, CLASSIC)
DEFAULT_QUEUE_TYPE = QUORUM

#: Deliveries of one message after which a quorum queue dead-letters it itself. The worker
#: counts lost deliveries and failures on its own (``GOVERNANCE_LOST_DELIVERY_LIMIT``,
#: ``GOVERNANCE_POISON_RETRY_LIMIT``) and parks far earlier; this is the last resort for a
#: message that kills every worker before it can be counted. Every requeue after an
#: infrastructure fault counts as a delivery too, hence the margin.
DEFAULT_DELIVERY_LIMIT = 1000

#: The queues workers consume: a message in them that the broker gives up on is dead-lettered,
#: at least once, into ``governance.commands.dead``.
WORK_QUEUES = (COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE)

#: Durable subscriptions ``governance.subscription.<name>``: bounded, so that a subscriber that
#: is gone for good cannot fill the broker. The oldest events are dropped first.
SUBSCRIPTION_QUEUE_PREFIX = "governance.subscription."
DEFAULT_SUBSCRIPTION_MAX_LENGTH = 1_000_000
DEFAULT_SUBSCRIPTION_MAX_AGE_SECONDS = 7 * 24 * 3600.0


def queue_arguments(
    name: str, queue_type: str = DEFAULT_QUEUE_TYPE, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> dict[str, object] | None:
    """The ``x-`` arguments ``name`` (one of :data:`WORKER_QUEUES`) is declared with; None for
    a classic queue, declared exactly as a plain Celery client declares it."""
    if name not in WORKER_QUEUES:
        raise ValueError(f"{name!r} is not a queue of the worker")
    _check_queue_type(queue_type)
    if queue_type == CLASSIC:
        return None
    if name == DEAD_LETTER_QUEUE:
        # The end of the line: no limit, no onward dead-lettering (a loop would be possible).
        return {"x-queue-type": QUORUM}
    if delivery_limit < 1:
        raise ValueError(f"delivery limit must be at least 1, not {delivery_limit}")
    return {
        "x-queue-type": QUORUM,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        # At-least-once: the broker keeps a dead letter until the dead-letter queue confirmed
        # it, which it can only do with reject-publish overflow.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def subscription_arguments(
    queue_type: str = DEFAULT_QUEUE_TYPE,
    *,
    max_length: int | None = DEFAULT_SUBSCRIPTION_MAX_LENGTH,
    max_age_seconds: float | None = DEFAULT_SUBSCRIPTION_MAX_AGE_SECONDS,
) -> dict[str, object]:
    """The arguments of a durable subscription queue: its type and its bounds (None: none)."""
    _check_queue_type(queue_type)
    arguments: dict[str, object] = {"x-queue-type": QUORUM} if queue_type == QUORUM else {}
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length}")
        arguments["x-max-length"] = max_length
    if max_age_seconds is not None:
        if not max_age_seconds > 0:
            raise ValueError(f"max_age_seconds must be positive, not {max_age_seconds}")
        arguments["x-message-ttl"] = max(1, round(max_age_seconds * 1000))
    return arguments


#: The settings every process that declares a worker queue reads, worker and producer alike.
QUEUE_TYPE_VARIABLE = "GOVERNANCE_QUEUE_TYPE"
DELIVERY_LIMIT_VARIABLE = "GOVERNANCE_DELIVERY_LIMIT"


def queue_type_from(environ: Mapping[str, str]) -> str:
    """The queue type ``environ`` asks for (``GOVERNANCE_QUEUE_TYPE``, default quorum)."""
    raw = environ.get(QUEUE_TYPE_VARIABLE, DEFAULT_QUEUE_TYPE)
    if raw not in QUEUE_TYPES:
        raise ValueError(f"{QUEUE_TYPE_VARIABLE}={raw!r} must be one of {', '.join(QUEUE_TYPES)}")
    return raw


def delivery_limit_from(environ: Mapping[str, str]) -> int:
    """The broker's delivery limit ``environ`` asks for (``GOVERNANCE_DELIVERY_LIMIT``)."""
    raw = environ.get(DELIVERY_LIMIT_VARIABLE)
    if raw is None:
        return DEFAULT_DELIVERY_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{DELIVERY_LIMIT_VARIABLE}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{DELIVERY_LIMIT_VARIABLE}={raw!r} must be at least 1")
    return value


def _check_queue_type(queue_type: str) -> None:
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type must be one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}")
