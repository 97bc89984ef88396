"""The Celery wiring: the app, its queues, the tasks, and dead-lettering of what isn't a command.

``celery -A worker worker`` and ``celery -A worker beat`` find ``app`` here with no other
flags. Tasks only decode and call the per-process runtime.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, Task, bootsteps, signals
from celery.exceptions import Reject
from celery.worker.consumer import Consumer
from kombu import Consumer as Consumer_
from kombu import Exchange, Queue

from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE
from worker import batching, runtime
from worker.config import Settings
from worker.errors import InfrastructureError
from worker.outbox import EventPublisher
from worker.transaction import NotACommand

log = logging.getLogger(__name__)

EXPIRE_DUE_TASK = "governance.expire_due"
RELAY_OUTBOX_TASK = "governance.relay_outbox"
MAINTENANCE_QUEUE = "governance.maintenance"
#: In batch mode, where a command that failed inside a batch goes to be retried on its own.
RETRY_QUEUE = "governance.commands.retry"

#: Declared exactly as a plain Celery client auto-declares a queue it is told to send to.
COMMANDS = Queue(COMMANDS_QUEUE, Exchange(COMMANDS_QUEUE, type="direct"), COMMANDS_QUEUE)
MAINTENANCE = Queue(
    MAINTENANCE_QUEUE, Exchange(MAINTENANCE_QUEUE, type="direct"), MAINTENANCE_QUEUE
)
RETRY = Queue(RETRY_QUEUE, Exchange(RETRY_QUEUE, type="direct"), RETRY_QUEUE)

#: In-process waits before a command hit by an infrastructure fault goes back to the broker.
INFRASTRUCTURE_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)

T = TypeVar("T")


def configure(app: Celery, settings: Settings) -> None:
    """Apply the governance worker's settings to a Celery app."""
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
        # In batch mode the command queue is consumed by the batch step, not by the pool.
        task_queues=(COMMANDS, MAINTENANCE) if settings.batch_size == 1 else (MAINTENANCE, RETRY),
        task_routes={
            APPLY_COMMAND_TASK: {"queue": COMMANDS_QUEUE},
            EXPIRE_DUE_TASK: {"queue": MAINTENANCE_QUEUE},
            RELAY_OUTBOX_TASK: {"queue": MAINTENANCE_QUEUE},
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
        },
    )


settings = Settings.from_env()
app = Celery("governance", set_as_current=False)
configure(app, settings)


def _with_backoff(operation: Callable[[], T]) -> T:
    """Run ``operation``, waiting and rerunning while infrastructure faults last a little."""
    for delay in INFRASTRUCTURE_BACKOFF:
        try:
            return operation()
        except InfrastructureError as exc:
            log.warning("infrastructure fault, retrying in %.2fs: %s", delay, exc)
            time.sleep(delay * (0.5 + random.random()))
    return operation()


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
    if len(args) != 1 or kwargs:
        return _dead_letter_task(
            self,
            args,
            kwargs,
            f"expected exactly one positional argument (the command object), got {len(args)} "
            f"positional and {len(kwargs)} keyword argument(s)",
        )
    try:
        stored = _with_backoff(lambda: runtime.current().handle(args[0]))
    except NotACommand as exc:
        return _dead_letter_task(self, args, kwargs, str(exc))
    except InfrastructureError as exc:
        # Not a rejection: the broker keeps the command and delivers it again.
        raise Reject(exc, requeue=True) from exc
    except Exception as exc:
        retries = self.request.retries or 0
        if retries >= settings.poison_retry_limit:
            return _dead_letter_task(
                self, args, kwargs, f"the handler failed {retries + 1} times: {exc!r}"
            )
        raise self.retry(exc=exc, countdown=min(30.0, 0.5 * 2**retries)) from exc
    return {"event_id": stored.event["event_id"], "sequence": stored.sequence}


def _dead_letter_task(self: Task, args: Any, kwargs: Any, reason: str) -> dict[str, Any] | None:
    body = args[0] if len(args) == 1 and not kwargs else {"args": args, "kwargs": kwargs}
    encoded = json.dumps(body, default=repr).encode("utf-8")
    headers = {
        "x-governance-task-id": self.request.id,
        "x-governance-retries": self.request.retries,
    }
    log.error("dead-lettering task %s: %s", self.request.id, reason)
    try:
        runtime.current().dead_letter(encoded, "application/json", reason, headers)
    except InfrastructureError as exc:
        raise Reject(exc, requeue=True) from exc
    return None


@app.task(name=EXPIRE_DUE_TASK, acks_late=False, ignore_result=True)
def expire_due() -> int:
    """Expire the requests whose deadline the database clock says has passed."""
    return runtime.current().expire_due()


@app.task(name=RELAY_OUTBOX_TASK, acks_late=False, ignore_result=True)
def relay_outbox() -> int:
    """Publish outbox events their writers could not."""
    return runtime.current().relay()


class GovernanceConsumer(Consumer):
    """Celery's consumer, but a message it cannot turn into a task is dead-lettered with the
    reason instead of being dropped, and the worker goes on."""

    _publisher: EventPublisher | None = None

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"undecodable message: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"unknown task: {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {exc}")

    def _dead_letter(self, message: Any, reason: str) -> None:
        from worker import deadletter

        raw = message.body
        body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
        log.error("dead-lettering message: %s", reason)
        try:
            if GovernanceConsumer._publisher is None:
                GovernanceConsumer._publisher = EventPublisher(settings.broker_url)
            deadletter.publish(
                GovernanceConsumer._publisher, body, message.content_type, reason, {}
            )
        except Exception:
            log.exception("could not dead-letter; returning the message to the queue")
            message.reject(requeue=True)
            return
        message.ack()


class BatchCommandConsumer(bootsteps.ConsumerStep):
    """Batch mode (``GOVERNANCE_BATCH_SIZE`` > 1): consume ``governance.commands`` in the main
    process and apply the commands in batches (see :mod:`worker.batching`).

    Messages are acknowledged only after their batch committed and its events went out (or
    were left to the relay); a batch hit by an infrastructure fault goes back to the queue.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.buffer: list[Any] = []
        self.timer_entry: Any = None
        self.hub: Any = None
        self.flush_scheduled = False

    def get_consumers(self, channel: Any) -> list[Any]:
        channel.basic_qos(0, settings.batch_size * 2, False)
        return [Consumer_(channel, queues=[COMMANDS], on_message=self.on_message)]

    def start(self, c: Any) -> None:
        super().start(c)
        self.hub = getattr(c, "hub", None)
        self.timer_entry = c.timer.call_repeatedly(settings.batch_linger_ms / 1000, self.flush)

    def stop(self, c: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
        # Unacknowledged messages go back to the queue when the channel closes.
        self.buffer = []
        super().stop(c)

    def on_message(self, message: Any) -> None:
        self.buffer.append(message)
        if len(self.buffer) >= settings.batch_size:
            self.flush()
        elif self.hub is not None and not self.flush_scheduled:
            # Flush once the event loop has read what already arrived: a batch is whatever
            # came in while the previous one was being applied, and nothing waits for the
            # linger when the queue is quiet. (Without an event loop the linger timer flushes.)
            self.flush_scheduled = True
            self.hub.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        messages, self.buffer = self.buffer, []
        if not messages:
            return
        commands: list[tuple[Any, object]] = []
        for message in messages:
            payload, reason = batching.decode_task_message(
                message.headers, message.body, message.content_type
            )
            if reason is not None:
                self._dead_letter(message, reason)
            else:
                commands.append((message, payload))
        if not commands:
            return
        try:
            results = _with_backoff(
                lambda: runtime.current().handle_batch([payload for _, payload in commands])
            )
        except InfrastructureError as exc:
            log.warning("batch of %d returned to the queue: %s", len(commands), exc)
            for message, _ in commands:
                message.reject(requeue=True)
            return
        for (message, payload), result in zip(commands, results, strict=True):
            if isinstance(result, NotACommand):
                self._dead_letter(message, str(result))
            elif isinstance(result, batching.Failed):
                # Alone on the retry queue, the task path's bounded retries and
                # dead-lettering apply to it.
                app.send_task(APPLY_COMMAND_TASK, args=[payload], queue=RETRY_QUEUE)
                message.ack()
            else:
                message.ack()

    def _dead_letter(self, message: Any, reason: str) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        log.error("dead-lettering message: %s", reason)
        try:
            runtime.current().dead_letter(body, message.content_type, reason)
        except InfrastructureError:
            message.reject(requeue=True)
            return
        message.ack()


if settings.batch_size > 1:
    app.steps["consumer"].add(BatchCommandConsumer)


@signals.worker_process_init.connect
def _fresh_runtime_after_fork(**_: Any) -> None:
    runtime.reset()


@signals.worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    runtime.reset()
