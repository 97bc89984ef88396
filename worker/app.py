"""The Celery wiring: the app, its queues, the tasks, and dead-lettering of what isn't a command.

``celery -A worker worker`` and ``celery -A worker beat`` find ``app`` here with no other
flags. Tasks and the batch consumer hand their messages to the one delivery pipeline
(:mod:`worker.delivery`); what is here is how Celery's messages are settled.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from amqp.exceptions import AMQPError, PreconditionFailed
from celery import Celery, Task, bootsteps, signals
from celery.exceptions import Reject
from celery.worker.consumer import Consumer
from celery.worker.control import inspect_command
from kombu import Connection, Exchange, Queue, serialization
from kombu import Consumer as Consumer_
from kombu.exceptions import OperationalError
from kombu.utils import json as kombu_json

from governance.commands import decode_json
from governance.parking import ParkCause, ParkReason
from governance.task_message import (
    CONTENT_TYPE,
    Decoded,
    decode_arguments,
    decode_task_message,
)
from governance.topology import (
    APPLY_COMMAND_TASK,
    APPLY_RETENTION_TASK,
    CLASSIC,
    COMMANDS_QUEUE,
    EXPIRE_DUE_TASK,
    MAINTENANCE_QUEUE,
    QUORUM,
    RELAY_OUTBOX_TASK,
    RETRY_QUEUE,
    queue_arguments,
)
from worker import database, deadletter, event_signing, outbox, runtime, startup
from worker.config import ConfigurationError, Settings
from worker.delivery import Delivery, Pipeline, park_message, task_headers
from worker.observability import observer
from worker.observability.tracing import TRACEPARENT

log = logging.getLogger(__name__)


def work_queue(name: str, settings: Settings) -> Queue:
    """A queue the worker consumes: the direct exchange of its name that a plain Celery client
    sends through, and the arguments of ``settings.queue_type`` (see
    :func:`governance.topology.queue_arguments`)."""
    arguments = queue_arguments(name, settings.queue_type, delivery_limit=settings.delivery_limit)
    return Queue(name, Exchange(name, type="direct"), name, queue_arguments=arguments)


#: The longest a Celery publish of the worker or beat waits on the broker's socket (a write,
#: the confirm, the closing handshake), in seconds: well inside the heartbeat, so that a
#: batch worker's event loop, which sends a failed command to the retry queue, keeps
#: answering the broker.
PUBLISH_TIMEOUT = 5.0


def configure(app: Celery, settings: Settings) -> None:
    """Apply the governance worker's settings to a Celery app."""
    commands, maintenance, retry = (
        work_queue(name, settings) for name in (COMMANDS_QUEUE, MAINTENANCE_QUEUE, RETRY_QUEUE)
    )
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # Confirms for everything the worker and beat publish through Celery (a command to
        # the retry queue, the maintenance runs), each wait on the socket bounded: through a
        # memory or disk alarm (the broker stops reading a publishing connection) a publish,
        # and closing the connection it failed on, give up instead of waiting the alarm out.
        # The connection the worker consumes from has neither (see GovernanceConsumer).
        broker_transport_options={
            "confirm_publish": True,
            "read_timeout": PUBLISH_TIMEOUT,
            "write_timeout": PUBLISH_TIMEOUT,
        },
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # Acknowledge only after the transaction committed; a killed child's message returns.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=COMMANDS_QUEUE,
        task_default_queue_type=settings.queue_type,
        task_create_missing_queue_type=settings.queue_type,
        # A quorum queue refuses global QoS: Celery sees the queue type in the declarations
        # and sets the prefetch per consumer instead.
        worker_detect_quorum_queues=True,
        # Every queue of the worker, so that ``-Q``/``-X`` select among them as usual; by
        # default the batch step takes the command queue over from the pool when it is
        # selected (see ``_batch_step_takes_the_commands``).
        task_queues=(commands, maintenance, retry),
        task_routes={
            APPLY_COMMAND_TASK: {"queue": COMMANDS_QUEUE},
            EXPIRE_DUE_TASK: {"queue": MAINTENANCE_QUEUE},
            RELAY_OUTBOX_TASK: {"queue": MAINTENANCE_QUEUE},
            APPLY_RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        worker_consumer="worker.app:GovernanceConsumer",
        # Maintenance runs carry no expiry. Celery turns ``expires`` into a message TTL, and
        # the maintenance queue dead-letters what expires in it: with no worker up for a
        # while, every run beat queued became a dead letter (and ``governance status`` said
        # "needs attention" until someone purged them). And the worker compared the expiry,
        # written by beat's clock, with its own: a beat a few seconds behind had its relay
        # runs discarded as expired, silently. A run queued while no worker was up runs when
        # one is back; with nothing to do it is one query.
        beat_schedule={
            "expire-due-requests": {
                "task": EXPIRE_DUE_TASK,
                "schedule": settings.expiry_interval,
            },
            "relay-outbox": {
                "task": RELAY_OUTBOX_TASK,
                "schedule": settings.relay_interval,
            },
            "apply-retention": {
                "task": APPLY_RETENTION_TASK,
                "schedule": settings.retention_interval,
            },
        },
    )


def decode_task_bodies_as_plain_json() -> None:
    """Every ``application/json`` body this process reads, on every path (the pool's tasks,
    the retry queue, the batch step's messages through :mod:`governance.task_message`), is
    decoded by :func:`governance.commands.decode_json`: plain JSON. kombu's own decoder
    turns an object of exactly the keys ``__type__`` and ``__value__`` into bytes, a date or
    a decimal (and raises on an unknown type), so a command's metadata would have read one
    way on the batch path and another on the task path. Encoding stays kombu's (what the
    worker sends is plain JSON already)."""
    serialization.register(
        "json", kombu_json.dumps, decode_json, content_type=CONTENT_TYPE, content_encoding="utf-8"
    )


decode_task_bodies_as_plain_json()
try:
    settings = Settings.from_env()
except ConfigurationError as exc:
    # Read when Celery loads the app, before any of its own error handling: a setting that
    # is wrong stops the worker with the one line saying which and why, not a traceback.
    raise SystemExit(f"governance worker: {exc}") from None
app = Celery("governance", set_as_current=False)
configure(app, settings)
observer.install(settings)
COMMANDS = work_queue(COMMANDS_QUEUE, settings)


TASKS = Pipeline(settings, batch=False)
BATCHES = Pipeline(settings, batch=True)


class _CeleryDelivery(Delivery):
    """What both kinds of delivery share: a retry goes to the retry queue as a task of its
    own (where the pool takes it, in either mode), with the count carried on."""

    def retry(self, command: object, countdown: float) -> None:
        app.send_task(
            APPLY_COMMAND_TASK,
            args=[command],
            queue=RETRY_QUEUE,
            retries=self.retries + 1,
            countdown=countdown,
            # Once, within PUBLISH_TIMEOUT: when the broker cannot take it now the pipeline
            # puts the command back on its queue instead, its count unchanged.
            retry=False,
        )
        self.ack()


class TaskDelivery(_CeleryDelivery):
    """A command delivered as a Celery task to a pool process (per-task mode, and the retry
    queue in either mode). Celery settles the message when the task returns: acknowledged,
    unless :meth:`requeue` was called (then the task raises ``Reject``)."""

    def __init__(self, task: Task, args: Any, kwargs: Any) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.requeued = False

    @property
    def redelivered(self) -> bool:
        return bool((self.task.request.delivery_info or {}).get("redelivered"))

    @property
    def retries(self) -> int:
        return int(self.task.request.retries or 0)

    @property
    def headers(self) -> Mapping[str, Any] | None:
        traceparent = getattr(self.task.request, TRACEPARENT, None)
        return {TRACEPARENT: traceparent} if traceparent else None

    def decode(self) -> Decoded:
        return decode_arguments(list(self.args), self.kwargs)

    def ack(self, *, multiple: bool = False) -> None:
        pass  # the task returns normally: Celery acknowledges (late)

    def requeue(self) -> None:
        self.requeued = True

    def park(self, reason: ParkReason) -> None:
        request = self.task.request
        park_message(
            deadletter.letter_from_arguments(list(self.args), self.kwargs),
            reason,
            task_headers(request.id, request.retries),
        )
        self.ack()


class MessageDelivery(_CeleryDelivery):
    """A raw message the worker's main process read: by the batch consumer, or one Celery's
    consumer could not turn into a task."""

    def __init__(self, message: Any) -> None:
        self.message = message

    @property
    def redelivered(self) -> bool:
        return bool((self.message.delivery_info or {}).get("redelivered"))

    @property
    def retries(self) -> int:
        return int((self.message.headers or {}).get("retries") or 0)

    @property
    def headers(self) -> Mapping[str, Any] | None:
        headers = self.message.headers
        return headers if isinstance(headers, Mapping) else None

    def decode(self) -> Decoded:
        return _decode(self.message)

    def ack(self, *, multiple: bool = False) -> None:
        self.message.ack(multiple=multiple)

    def requeue(self) -> None:
        self.message.reject(requeue=True)

    def park(self, reason: ParkReason) -> None:
        raw = self.message.body
        body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
        letter = deadletter.letter_from_message(
            self.message.headers, body, self.message.content_type
        )
        task = self.headers or {}
        headers = task_headers(task.get("id"), task.get("retries")) if "id" in task else None
        park_message(letter, reason, headers)
        self.ack()


@app.task(
    name=APPLY_COMMAND_TASK,
    bind=True,
    typing=False,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,
)
def apply_command(self: Task, *args: Any, **kwargs: Any) -> None:
    """Apply one transition command, a batch of one through the delivery pipeline; its
    outcome goes out as an event, never as a result."""
    delivery = TaskDelivery(self, args, kwargs)
    TASKS.deliver([delivery])
    if delivery.requeued:
        # Not a rejection: the broker keeps the command and delivers it again.
        raise Reject("returned to the queue", requeue=True)


@app.task(name=EXPIRE_DUE_TASK, acks_late=False, ignore_result=True)
def expire_due() -> int:
    """Expire the requests whose deadline the database clock says has passed."""
    expired = runtime.current().expire_due()
    observer.expiry_ran(expired)
    return expired


@app.task(name=RELAY_OUTBOX_TASK, acks_late=False, ignore_result=True)
def relay_outbox() -> int:
    """Publish outbox events their writers could not."""
    relayed = runtime.current().relay()
    observer.relay_ran(relayed)
    return relayed


@app.task(name=APPLY_RETENTION_TASK, acks_late=False, ignore_result=True)
def apply_retention() -> dict[str, int]:
    """Prune the idempotency ledger past its window and the event log past its horizon."""
    run = runtime.current().apply_retention()
    log.info(
        "retention: %d ledger rows and %d events pruned%s",
        run.ledger_rows,
        run.log_events,
        " (more left for the next run)" if run.unfinished else "",
    )
    return {"ledger_rows": run.ledger_rows, "log_events": run.log_events}


class GovernanceConsumer(Consumer):
    """Celery's consumer, but a message it cannot turn into a task is dead-lettered with the
    reason instead of being dropped, and the worker goes on."""

    class Blueprint(Consumer.Blueprint):
        # Without native delayed delivery: it only serves topic exchanges, and the command
        # queue keeps the direct exchange plain clients send through. It would declare and
        # bind 28 more queues on every start for nothing.
        default_steps = [
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]

    def connection_for_read(self, heartbeat: Any = None) -> Any:
        # Nothing the worker publishes on the connection it consumes from needs a confirm
        # (replies to control commands such as ``inspect ping``): waiting for one would hold
        # the event loop for as long as the broker blocks publishing (a whole memory alarm).
        # Its reads are the event loop's, which polls: no socket timeout either.
        return self.ensure_connected(
            self.app.connection_for_read(
                heartbeat=heartbeat,
                transport_options={
                    "confirm_publish": False,
                    "read_timeout": None,
                    "write_timeout": None,
                },
            )
        )

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _park_message(message, ParkCause.UNDECODABLE, f"undecodable message: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _park_message(message, ParkCause.NOT_A_TASK, "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _park_message(message, ParkCause.UNKNOWN_TASK, f"unknown task: {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _park_message(message, ParkCause.INVALID_TASK, f"invalid task message: {exc}")


def _park_message(message: Any, cause: ParkCause, text: str) -> None:
    """Park a message Celery's consumer could not turn into a task."""
    TASKS.park(MessageDelivery(message), ParkReason(cause, text))


class BatchCommandConsumer(bootsteps.ConsumerStep):
    """Adaptive batches (the default; ``GOVERNANCE_BATCH_SIZE`` > 1): consume
    ``governance.commands`` in the main process and apply what has arrived in one guarded
    transaction (see :mod:`worker.batching`).

    Messages are acknowledged only after their batch committed and its events went out (or
    were left to the relay); a batch hit by an infrastructure fault goes back to the queue.
    A redelivered message is applied alone, so that one that kills its worker is counted (and
    in the end parked) alone, without the batch it came with.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.buffer: list[Any] = []
        self.timer_entry: Any = None
        self.hub: Any = None
        self.connection: Any = None
        self.draining = False

    #: Whether this worker consumes ``governance.commands`` at all (not with ``-Q`` naming
    #: only other queues, say); decided once its queues are selected.
    consumes_commands = False

    def get_consumers(self, channel: Any) -> list[Any]:
        if not self.consumes_commands:
            return []
        # Two batches per consumer: the next one is already on the socket while this one is
        # applied (with one batch's worth the worker waits a round trip after each batch's
        # acknowledgements and gets part of a batch). Never global: a quorum queue refuses it.
        channel.basic_qos(0, settings.batch_size * 2, False)
        return [Consumer_(channel, queues=[COMMANDS], on_message=self.on_message, accept=["json"])]

    def start(self, c: Any) -> None:
        super().start(c)
        self.hub = getattr(c, "hub", None)
        self.connection = c.connection
        if self.hub is not None:
            # Called on every turn of the event loop, after its ready callbacks and timers,
            # right before it polls (and may sleep): what was read by then is applied then.
            self.hub.on_tick.add(self._before_poll)
        else:
            # No event loop (a gevent or eventlet pool): only the linger timer flushes.
            self.timer_entry = c.timer.call_repeatedly(settings.batch_linger_ms / 1000, self.flush)

    def stop(self, c: Any) -> None:
        if self.hub is not None:
            self.hub.on_tick.discard(self._before_poll)
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        # Unacknowledged messages go back to the queue when the channel closes.
        self.buffer = []
        super().stop(c)

    def on_message(self, message: Any) -> None:
        self.buffer.append(message)
        if len(self.buffer) >= settings.batch_size and not self.draining:
            self.flush()

    def _before_poll(self) -> None:
        """Apply what was read, with whatever else the socket already holds, up to the batch
        size: a batch is what came in while the previous one was being applied, and on a
        quiet queue a command is applied alone, at once.

        Not from ``hub.call_soon``: a callback added from one of the hub's ready callbacks
        (where its reader takes a burst's later messages, one per callback per turn) waits
        for the next poll, which sleeps until some unrelated timer or message comes; a
        burst's last commands then sat read but unapplied. And reading one message per turn
        would make small batches of a burst."""
        if not self.buffer:
            return
        self.draining = True
        try:
            for _ in range(settings.batch_size * 2):
                if len(self.buffer) >= settings.batch_size:
                    break
                # Reads only what the socket holds: a timeout at once when nothing is there
                # (a frame begun is read to its end).
                self.connection.drain_events(timeout=0)
        except TimeoutError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                raise
        finally:
            self.draining = False
        self.flush()

    def flush(self) -> None:
        messages, self.buffer = self.buffer, []
        if messages:
            BATCHES.deliver([MessageDelivery(message) for message in messages])


def _decode(message: Any) -> Decoded:
    """The command a message read by the batch consumer carries, or why it carries none, in
    the order and the words of Celery's own consumer in per-task mode: a message is parked
    for the same reason whichever mode read it."""
    task = (message.headers or {}).get("task")
    if message.content_type != CONTENT_TYPE and task in (None, APPLY_COMMAND_TASK):
        # kombu's verdict on the content type (only JSON is accepted), as Celery's consumer
        # gets it: a message without a task header is "undecodable", one with it "invalid".
        try:
            message.decode()
        except Exception as exc:
            kind = "invalid task message" if task else "undecodable message"
            cause = ParkCause.INVALID_TASK if task else ParkCause.UNDECODABLE
            return Decoded(problem=f"{kind}: {exc}", cause=cause)
    return decode_task_message(message.headers, message.body, message.content_type)


if settings.batch_size > 1:
    app.steps["consumer"].add(BatchCommandConsumer)


@signals.worker_init.connect
def _batch_step_takes_the_commands(sender: Any = None, **_: Any) -> None:
    """In batch mode, the command queue, if this worker is to consume it, is consumed by the
    batch step instead of the pool (runs once ``-Q``/``-X`` have selected the queues)."""
    if settings.batch_size == 1 or sender is None:
        return
    queues = sender.app.amqp.queues
    if COMMANDS_QUEUE in queues.consume_from:
        queues.deselect(COMMANDS_QUEUE)
        BatchCommandConsumer.consumes_commands = True


@inspect_command(name="active_queues")
def _active_queues(state: Any) -> list[dict[str, Any]]:
    """List the task queues a worker is currently consuming from (Celery's own command, with
    the command queue when the batch step consumes it: ``celery inspect active_queues`` and
    ``governance status`` show where commands go in either mode)."""
    consumer = state.consumer
    queues = list(consumer.task_consumer.queues) if consumer.task_consumer else []
    if BatchCommandConsumer.consumes_commands:
        queues.append(COMMANDS)
    return [dict(queue.as_dict(recurse=True)) for queue in queues]


@inspect_command(name="governance_state")
def _governance_state(state: Any) -> dict[str, Any]:
    """What ``governance status`` asks each worker, in one round: the queues it consumes (as
    ``active_queues``) and the modes it runs in, so a worker started in a development mode
    inside a deployment is seen."""
    return {
        "queues": _active_queues(state),
        "auth": settings.auth,
        "policy": settings.approval_policy,
    }


@signals.worker_init.connect
def _check_broker_topology(**_: Any) -> None:
    """Stop at once, with one line saying what to do, when the broker holds a worker queue
    declared otherwise (a classic ``governance.commands`` met by a quorum worker)."""
    queues = [
        work_queue(name, settings) for name in (COMMANDS_QUEUE, MAINTENANCE_QUEUE, RETRY_QUEUE)
    ]
    problem = _declare_or_explain(settings.broker_url, [*queues, deadletter.DEAD_LETTERS])
    if problem is not None:
        # Exits with status 1, the line on stderr.
        raise SystemExit(problem)


def _declare_or_explain(broker_url: str, queues: list[Queue]) -> str | None:
    """Declare the worker's queues (the dead-letter queue first: the others dead-letter into
    it) and the events exchange; the one-line explanation when the broker refuses one as
    declared otherwise. A broker that cannot be reached is left to Celery's own
    reconnection. Producers and subscribers only look the topology up (their broker users
    may not declare it): the worker declares all of it before it consumes."""
    try:
        with Connection(broker_url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=2)
            for queue in sorted(queues, key=lambda q: q.name != deadletter.DEAD_LETTERS.name):
                try:
                    queue(connection.channel()).declare()
                except PreconditionFailed as exc:
                    return _inequivalent_queue_line(queue, exc)
            outbox.EVENTS(connection.channel()).declare()
    except (OperationalError, OSError, AMQPError) as exc:
        log.warning("could not check the broker's queues before starting: %s", exc)
    return None


def _inequivalent_queue_line(queue: Queue, exc: Exception) -> str:
    wanted = settings.queue_type
    other = CLASSIC if wanted == QUORUM else QUORUM
    return (
        f"queue {queue.name} exists on the broker with other arguments than this worker "
        f"declares (GOVERNANCE_QUEUE_TYPE={wanted}, GOVERNANCE_DELIVERY_LIMIT="
        f"{settings.delivery_limit}): {exc}. Migrate it (stop the producers, let the "
        f"workers drain it, delete it, start this worker to redeclare it) or set "
        f"GOVERNANCE_QUEUE_TYPE={other} to use it as it is"
    )


@signals.worker_init.connect
def _read_worker_key(**_: Any) -> None:
    """Read the worker's key once, before any event is built (forked pool children inherit
    it); in signed mode a worker without one stops at once, with one line saying why."""
    if event_signing.installed() is not None:
        return  # given in process (the embedded stack makes its own)
    try:
        key = event_signing.load(settings.worker_key, signed=settings.auth == "signed")
    except event_signing.WorkerKeyMissing as exc:
        # Exits with status 1, the line on stderr.
        raise SystemExit(str(exc)) from None
    event_signing.install(key)
    if key is None:
        log.warning(
            "GOVERNANCE_WORKER_KEY is not set: this worker's events are unsigned, and "
            "subscribers in signed mode ignore them (development mode only)"
        )
    else:
        log.info("signing events as %s with key %s", key.actor_id, key.key_id)
        problem = event_signing.registration_problem(settings.database_url, key)
        if problem is not None:
            # Not fatal (the operator may be registering it right now), but every event
            # would be ignored by subscribers until then: say so where it is seen.
            log.warning(
                "%s: %s, so subscribers ignore the events this worker signs; register it "
                "with `governance actors worker-key %s --actor %s`",
                event_signing.KEY_VARIABLE,
                problem,
                settings.worker_key,
                key.actor_id,
            )


@signals.worker_init.connect
def _check_deployment(**_: Any) -> None:
    """Stop at once, with one line saying what to do, when the database does not fit this
    worker: a schema of another release, or another trust mode than this worker's
    ``GOVERNANCE_AUTH`` (``governance migrate --auth`` pins it: a development-mode worker
    must not take actors as asserted inside a signed deployment)."""
    problem = deployment_problem_at_start(settings)
    if problem is not None:
        # Exits with status 1, the line on stderr.
        raise SystemExit(problem)


def deployment_problem_at_start(settings: Settings) -> str | None:
    """Why a worker with ``settings`` must not start on its database, or None. A database
    that cannot be reached now is checked on every connection the worker makes later
    (:func:`worker.database.create_pool`), so nothing is applied before it passes."""
    try:
        with psycopg.connect(database.conninfo(settings), autocommit=True) as conn:
            return startup.deployment_problem(conn, settings.auth)
    except psycopg.errors.InsufficientPrivilege as exc:
        return startup.privilege_problem(exc)
    except psycopg.OperationalError as exc:
        log.warning("could not check the database before starting (checked on connect): %s", exc)
        return None


@signals.worker_init.connect
def _warn_of_development_modes(**_: Any) -> None:
    if settings.auth == "off":
        log.warning(
            "GOVERNANCE_AUTH=off: DEVELOPMENT MODE. Commands are not authenticated: any actor "
            "is taken as asserted and the roles table is not checked. Never run a "
            "deployment like this."
        )
    if settings.approval_policy == "requester":
        log.warning(
            "GOVERNANCE_POLICY=requester: DEVELOPMENT MODE. Requests take the approvals their "
            "requester asks for, not the deployment's approval policy: a requester may approve "
            "its own change through a friend. Never run a deployment like this."
        )


@signals.worker_process_init.connect
def _fresh_runtime_after_fork(**_: Any) -> None:
    runtime.reset()


@signals.worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    runtime.reset()
