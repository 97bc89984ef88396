"""The one delivery pipeline: how a command message becomes an outcome, in either mode.

Per-task mode (``GOVERNANCE_BATCH_SIZE=1``, a Celery task per command) hands the pipeline a
batch of one; the batch consumer hands it what has arrived. Every message goes through the
same steps, written here once:

1. **decode**: a message that carries no command is parked with the cause;
2. **guard lost deliveries**: a redelivered message is applied alone, and its deliveries
   during which the worker was lost are counted; past the bound it is parked;
3. **apply**: the guarded transaction (:func:`worker.batching.apply_batch`), retried in
   process while an infrastructure fault lasts a little (:func:`with_backoff`);
4. **decide**: the error policy (:mod:`worker.policy`) says retry, requeue or park for a
   command that produced no outcome;
5. **acknowledge**: only once the outcome is committed (and its event published or left to
   the relay), or the message is parked or handed on to the retry queue.

How a message is acknowledged, requeued, retried or parked is its :class:`Delivery`'s
business (a kombu message, a Celery task request); what happens to it is the pipeline's.
"""

from __future__ import annotations

import abc
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from governance.commands import duplicate_key
from governance.parking import ParkReason
from governance.task_message import Decoded
from worker import batching, deadletter, policy, runtime
from worker.config import Settings
from worker.errors import InfrastructureError, SuspectFault
from worker.observability import observer
from worker.policy import Action
from worker.transaction import NotACommand

log = logging.getLogger(__name__)

#: In-process waits before a command hit by an infrastructure fault goes back to the broker;
#: the total is also bounded by ``GOVERNANCE_INFRASTRUCTURE_RETRY_SECONDS``.
INFRASTRUCTURE_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)

T = TypeVar("T")


class Delivery(abc.ABC):
    """One message handed to the pipeline, and the ways it can be settled.

    Exactly one of :meth:`ack`, :meth:`requeue`, :meth:`retry` and :meth:`park` settles it;
    :meth:`retry` and :meth:`park` publish first and raise when the broker cannot take the
    message (the pipeline then requeues it instead)."""

    @property
    @abc.abstractmethod
    def redelivered(self) -> bool:
        """Whether the broker delivered this message before."""

    @property
    @abc.abstractmethod
    def retries(self) -> int:
        """Counted retries so far (failures the message itself caused)."""

    @property
    @abc.abstractmethod
    def headers(self) -> Mapping[str, Any] | None:
        """The message's headers (a ``traceparent`` among them continues its trace)."""

    @abc.abstractmethod
    def decode(self) -> Decoded:
        """The command the message carries, or why it carries none."""

    @abc.abstractmethod
    def ack(self, *, multiple: bool = False) -> None:
        """Done with it. ``multiple``: and with every earlier delivery of its channel, each
        of which the pipeline has settled already."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Back to its queue as it is, nothing counted: a fault of the surroundings."""

    @abc.abstractmethod
    def retry(self, command: object, countdown: float) -> None:
        """To the retry queue, alone, ``countdown`` seconds from now, its retry count one up;
        then acknowledged."""

    @abc.abstractmethod
    def park(self, reason: ParkReason) -> None:
        """To the dead-letter queue with ``reason``; then acknowledged."""


def park_message(
    letter: deadletter.Letter, reason: ParkReason, headers: Mapping[str, Any] | None
) -> None:
    """Put a message's letter on the dead-letter queue (what every :meth:`Delivery.park` does
    before it acknowledges); raises ``InfrastructureError`` when the broker cannot take it."""
    runtime.current().dead_letter(letter, reason, dict(headers or {}))


def task_headers(task_id: object, retries: object) -> dict[str, Any]:
    """What a dead letter keeps of the task that carried it, whichever mode parked it."""
    return {"x-governance-task-id": task_id, "x-governance-retries": retries}


class Pipeline:
    """Delivers messages: decode, guard lost deliveries, apply, decide, acknowledge."""

    def __init__(self, settings: Settings, *, batch: bool) -> None:
        self.settings = settings
        #: Which mode runs are timed under (the ``mode`` label of the transaction metric).
        self.batch = batch

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Take ``deliveries`` (in the order the broker delivered them) to their outcomes.

        Fresh commands are applied together, last, so that acknowledging the last of them
        with ``multiple`` covers only deliveries settled already. A redelivered one is
        applied alone: one that kills its worker is counted, and in the end parked, without
        the batch it came with."""
        fresh: list[tuple[Delivery, object]] = []
        for delivery in deliveries:
            decoded = delivery.decode()
            reason = decoded.park_reason
            if reason is not None:
                self.park(delivery, reason)
            elif delivery.redelivered:
                self._apply([(delivery, decoded.command)], redelivered=True)
            else:
                fresh.append((delivery, decoded.command))
        if fresh:
            self._apply(fresh, redelivered=False)

    def park(self, delivery: Delivery, reason: ParkReason) -> None:
        """Park ``delivery``; back to its queue when the dead-letter queue cannot take it."""
        try:
            delivery.park(reason)
        except Exception as exc:
            log.warning("could not dead-letter (%s); returning the message to the queue", exc)
            delivery.requeue()
            return
        observer.parked(reason.cause)

    def with_backoff(self, operation: Callable[[], T]) -> T:
        """Run ``operation``, waiting and rerunning while infrastructure faults last a little.

        Bounded in time, not only in attempts: past the budget the fault is raised and the
        message goes back to the broker, so a worker never sits on a command (or, in batch
        mode, blocks its event loop) for longer than the budget plus one attempt's own
        timeouts."""
        deadline = time.monotonic() + self.settings.infrastructure_retry_seconds
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

    def _apply(self, commands: list[tuple[Delivery, object]], *, redelivered: bool) -> None:
        key: str | None = None
        payloads = [command for _, command in commands]
        try:
            if redelivered:
                message_key = key = policy.message_key(payloads[0])
                lost = self.with_backoff(lambda: runtime.current().count_lost_delivery(message_key))
                verdict = policy.lost_deliveries_verdict(lost, self.settings.lost_delivery_limit)
                if verdict is not None:
                    self.park(commands[0][0], verdict.park_reason)
                    return
            run = observer.Run(payloads, [d.headers for d, _ in commands], batch=self.batch)
            with run:
                results = self.with_backoff(lambda: runtime.current().handle_batch(payloads))
                run.finished(results)
        except SuspectFault as exc:
            # Perhaps one of them causes it: each is retried alone, counted, so that the one
            # that does is parked in the end and the others are applied.
            log.warning("%d command(s) to be retried one by one: %s", len(commands), exc)
            for delivery, command in commands:
                self._after_failure(delivery, command, exc)
            return
        except InfrastructureError as exc:
            observer.infrastructure_retry(exc, "requeue")
            log.warning("%d command(s) returned to the queue: %s", len(commands), exc)
            for delivery, _ in commands:
                delivery.requeue()
            return
        except Exception as exc:
            # Not from one command (those fail alone, inside the batch): every message of
            # the run meets the same policy, on its own from here on.
            log.exception("a run of %d command(s) failed", len(commands))
            for delivery, command in commands:
                self._after_failure(delivery, command, exc)
            return
        finally:
            if key is not None:
                runtime.current().forget_delivery(key)
        if not redelivered and not any(
            isinstance(r, batching.Failed | NotACommand) for r in results
        ):
            # One frame for the whole batch: every earlier delivery is settled by now.
            commands[-1][0].ack(multiple=True)
            return
        for (delivery, command), result in zip(commands, results, strict=True):
            if isinstance(result, batching.Failed):
                self._after_failure(delivery, command, result.error)
            elif isinstance(result, NotACommand):
                self._after_failure(delivery, command, result)
            else:
                delivery.ack()

    def _after_failure(self, delivery: Delivery, command: object, exc: BaseException) -> None:
        """Settle a delivery that produced no outcome as the error policy says."""
        verdict = policy.on_failure(
            exc,
            delivery.retries,
            self.settings.poison_retry_limit,
            self.settings.suspect_retry_limit,
        )
        if verdict.action is Action.RETRY and duplicate_key(command) is not None:
            # A copy re-encoded for the retry queue would name each key once: a command
            # that must be refused would read as a valid one there. Parked as it came.
            verdict = policy.not_retried(verdict, "a key is given twice")
        if verdict.action is Action.PARK:
            self.park(delivery, verdict.park_reason)
        elif verdict.action is Action.REQUEUE:
            observer.infrastructure_retry(exc, "requeue")
            delivery.requeue()
        else:
            try:
                delivery.retry(command, verdict.countdown)
            except Exception as publish_error:
                # Not the message's doing: it comes back as it was, its count unchanged.
                log.warning("could not send a retry (%s); requeued instead", publish_error)
                delivery.requeue()
