"""The Celery wiring: the app, its queues, the tasks, and dead-lettering of what isn't a command.

``celery -A worker worker`` and ``celery -A worker beat`` find ``app`` here with no other
flags. Tasks only decode and call the per-process runtime.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

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

from governance.commands import decode_json, duplicate_key
from governance.task_message import (
    CONTENT_TYPE,
    Decoded,
    arguments_problem,
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
from worker import batching, database, deadletter, event_signing, outbox, policy, runtime, startup
from worker.config import ConfigurationError, Settings
from worker.errors import InfrastructureError
from worker.observability import observer
from worker.policy import Action, Verdict
from worker.transaction import NotACommand

log = logging.getLogger(__name__)


def work_queue(name: str, settings: Settings) -> Queue:
    """A queue the worker consumes: the direct exchange of its name that a plain Celery client
    sends through, and the arguments of ``settings.queue_type`` (see
    :func:`governance.topology.queue_arguments`)."""
    arguments = queue_arguments(name, settings.queue_type, delivery_limit=settings.delivery_limit)
    return Queue(name, Exchange(name, type="direct"), name, queue_arguments=arguments)


#: In-process waits before a command hit by an infrastructure fault goes back to the broker;
#: the total is also bounded by ``GOVERNANCE_INFRASTRUCTURE_RETRY_SECONDS``.
INFRASTRUCTURE_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)

T = TypeVar("T")


def configure(app: Celery, settings: Settings) -> None:
    """Apply the governance worker's settings to a Celery app."""
    commands, maintenance, retry = (
        work_queue(name, settings) for name in (COMMANDS_QUEUE, MAINTENANCE_QUEUE, RETRY_QUEUE)
    )
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # Confirms for everything the worker publishes through Celery (task retries).
        broker_transport_options={"confirm_publish": True},
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
        beat_schedule={
            "expire-due-requests": {
                "task": EXPIRE_DUE_TASK,
                "schedule": settings.expiry_interval,
                "options": {"expires": settings.expiry_interval * 2},
            },
            "relay-outbox": {
                "task": RELAY_OUTBOX_TASK,
                "schedule": settings.relay_interval,
                "options": {"expires": settings.relay_interval * 2},
            },
            "apply-retention": {
                "task": APPLY_RETENTION_TASK,
                "schedule": settings.retention_interval,
                "options": {"expires": settings.retention_interval},
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


def _with_backoff(operation: Callable[[], T]) -> T:
    """Run ``operation``, waiting and rerunning while infrastructure faults last a little.

    Bounded in time, not only in attempts: past the budget the fault is raised and the message
    goes back to the broker, so a worker never sits on a command (or, in batch mode, blocks its
    event loop) for longer than the budget plus one attempt's own timeouts.
    """
    deadline = time.monotonic() + settings.infrastructure_retry_seconds
    for delay in INFRASTRUCTURE_BACKOFF:
        try:
            return operation()
        except InfrastructureError as exc:
            wait = delay * (0.5 + random.random())
            if time.monotonic() + wait > deadline:
                raise
            observer.infrastructure_retry(exc, "backoff")
            log.warning("infrastructure fault, retrying in %.2fs: %s", wait, exc)
            time.sleep(wait)
    return operation()


def _guard_lost_deliveries(payload: object, redelivered: bool) -> tuple[str | None, Verdict | None]:
    """For a redelivered message, count its lost deliveries; the key to clear once this one
    completes, and the verdict when it must be parked instead of tried again."""
    if not redelivered:
        return None, None
    key = policy.message_key(payload)
    lost = _with_backoff(lambda: runtime.current().count_lost_delivery(key))
    return key, policy.lost_deliveries_verdict(lost, settings.lost_delivery_limit)


@app.task(
    name=APPLY_COMMAND_TASK,
    bind=True,
    typing=False,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,
)
def apply_command(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """Apply one transition command; its outcome goes out as an event, never as a result."""
    problem = arguments_problem(args, kwargs)
    if problem is not None:
        _park_task(self, args, kwargs, problem)
        return None
    payload = args[0]
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    key: str | None = None
    try:
        key, lost = _guard_lost_deliveries(payload, redelivered)
        if lost is not None:
            _park_task(self, args, kwargs, lost.reason)
            return None
        with observer.task_run(payload, self.request) as run:
            stored = _with_backoff(lambda: runtime.current().handle(payload))
            run.finished([stored])
    except Exception as exc:
        verdict = policy.on_failure(exc, self.request.retries or 0, settings.poison_retry_limit)
        if verdict.action is Action.REQUEUE:
            observer.infrastructure_retry(exc, "requeue")
            # Not a rejection: the broker keeps the command and delivers it again.
            raise Reject(exc, requeue=True) from exc
        if verdict.action is Action.PARK:
            _park_task(self, args, kwargs, verdict.reason)
            return None
        if duplicate_key(payload) is not None:
            # Celery's retry re-encodes the arguments, each key once (see _after_failure).
            _park_task(self, args, kwargs, f"{verdict.reason}; not retried: a key is given twice")
            return None
        raise self.retry(exc=exc, countdown=verdict.countdown) from exc
    finally:
        if key is not None:
            runtime.current().forget_delivery(key)
    return {"event_id": stored.event["event_id"], "sequence": stored.sequence}


def _task_headers(task_id: object, retries: object) -> dict[str, Any]:
    """What a dead letter keeps of the task that carried it, whichever mode parked it."""
    return {"x-governance-task-id": task_id, "x-governance-retries": retries}


def _park_task(self: Task, args: Any, kwargs: Any, reason: str) -> None:
    headers = _task_headers(self.request.id, self.request.retries)
    try:
        runtime.current().dead_letter(
            deadletter.letter_from_arguments(list(args), kwargs), reason, headers
        )
    except InfrastructureError as exc:
        raise Reject(exc, requeue=True) from exc
    observer.parked(reason)
    return None


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

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _park_message(message, f"undecodable message: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _park_message(message, "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _park_message(message, f"unknown task: {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _park_message(message, f"invalid task message: {exc}")


def _park_message(message: Any, reason: str) -> None:
    """Dead-letter a raw message and acknowledge it; back to the queue if that fails."""
    raw = message.body
    body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
    letter = deadletter.letter_from_message(message.headers, body, message.content_type)
    task = message.headers if isinstance(message.headers, dict) else {}
    headers = _task_headers(task.get("id"), task.get("retries")) if "id" in task else None
    try:
        runtime.current().dead_letter(letter, reason, headers)
    except Exception:
        log.exception("could not dead-letter; returning the message to the queue")
        message.reject(requeue=True)
        return
    message.ack()
    observer.parked(reason)


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
        fresh: list[tuple[Any, object]] = []
        for message in messages:
            decoded = _decode(message)
            if decoded.problem is not None:
                _park_message(message, decoded.problem)
            elif message.delivery_info.get("redelivered"):
                self._apply([(message, decoded.command)], redelivered=True)
            else:
                fresh.append((message, decoded.command))
        if fresh:
            self._apply(fresh, redelivered=False)

    def _apply(self, commands: list[tuple[Any, object]], *, redelivered: bool) -> None:
        key: str | None = None
        try:
            if redelivered:
                key, lost = _guard_lost_deliveries(commands[0][1], True)
                if lost is not None:
                    _park_message(commands[0][0], lost.reason)
                    return
            with observer.batch_run(commands) as run:
                results = _with_backoff(
                    lambda: runtime.current().handle_batch([payload for _, payload in commands])
                )
                run.finished(results)
        except InfrastructureError as exc:
            observer.infrastructure_retry(exc, "requeue")
            log.warning("batch of %d returned to the queue: %s", len(commands), exc)
            for message, _ in commands:
                message.reject(requeue=True)
            return
        except Exception as exc:
            # Not from one command (those fail alone, inside the batch): every message of
            # the batch meets the same policy, on its own from here on.
            log.exception("a batch of %d failed", len(commands))
            for message, payload in commands:
                self._after_failure(message, payload, exc)
            return
        finally:
            if key is not None:
                runtime.current().forget_delivery(key)
        if not redelivered and not any(
            isinstance(r, (batching.Failed, NotACommand)) for r in results
        ):
            # One frame for the whole batch. The fresh commands are applied last in a flush,
            # so every earlier delivery of this channel is settled by now (and none read
            # after them is covered).
            commands[-1][0].ack(multiple=True)
            return
        for (message, payload), result in zip(commands, results, strict=True):
            if isinstance(result, batching.Failed):
                self._after_failure(message, payload, result.error)
            elif isinstance(result, NotACommand):
                self._after_failure(message, payload, result)
            else:
                message.ack()

    def _after_failure(self, message: Any, payload: object, exc: BaseException) -> None:
        retries = int((message.headers or {}).get("retries") or 0)
        verdict = policy.on_failure(exc, retries, settings.poison_retry_limit)
        if verdict.action is Action.RETRY and duplicate_key(payload) is not None:
            # A copy re-encoded for the retry queue would name each key once: a command
            # that must be refused would read as a valid one there. Parked as it came.
            _park_message(message, f"{verdict.reason}; not retried: a key is given twice")
        elif verdict.action is Action.PARK:
            _park_message(message, verdict.reason)
        elif verdict.action is Action.REQUEUE:
            message.reject(requeue=True)
        else:
            # Alone on the retry queue, where the task path takes it, with the same policy
            # and the count carried on.
            app.send_task(
                APPLY_COMMAND_TASK,
                args=[payload],
                queue=RETRY_QUEUE,
                retries=retries + 1,
                countdown=verdict.countdown,
            )
            message.ack()


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
            return Decoded(problem=f"{kind}: {exc}")
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
