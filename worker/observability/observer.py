"""The one place the Celery wiring reports to: each run's results become metrics, outcome
log lines and spans; the periodic tasks' runs are recorded for ``governance status``.

:func:`install` connects the worker's signals (logging set up, worker ready, pool process
exit). :class:`Run` observes a run of the guarded transaction (a batch of one in per-task mode);
:func:`parked`, :func:`infrastructure_retry`, :func:`relay_ran` and :func:`expiry_ran` the
rest. None of it changes what the worker does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import Any

import psycopg
from celery import signals

from governance.commands import CommandType
from governance.parking import ParkCause
from worker import runtime
from worker.config import Settings
from worker.observability import context, logs, metrics, tracing
from worker.transaction import NotACommand, StoredOutcome

log = logging.getLogger(__name__)

#: A command type label for anything that is not a known type.
INVALID_TYPE = "invalid"

#: Records that a periodic task finished, and reads the outbox's backlog in the same trip.
RECORD_RUN = """
INSERT INTO maintenance_runs (task, finished_at, handled) VALUES (%(task)s, now(), %(handled)s)
ON CONFLICT (task) DO UPDATE SET finished_at = excluded.finished_at, handled = excluded.handled
"""
OUTBOX_BACKLOG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM outbox_events WHERE published_at IS NULL
"""


def install(settings: Settings) -> None:
    """Connect the observability hooks to the worker's Celery signals."""

    def on_logging(logger: logging.Logger, **_: Any) -> None:
        logs.configure(logger, settings.log_format)

    def on_init(**_: Any) -> None:
        tracing.configure(settings.traces_exporter, settings.traces_file)

    def on_ready(**_: Any) -> None:
        if settings.metrics_port is not None and metrics.ENABLED:
            try:
                metrics.serve(settings.metrics_port)
            except OSError as exc:
                # Still recorded, in case the port frees up for a restart; commands go on.
                log.error("cannot serve metrics on port %d: %s", settings.metrics_port, exc)
                return
            log.info("serving metrics on port %d", settings.metrics_port)

    def on_process_exit(**_: Any) -> None:
        metrics.process_exited(os.getpid())

    signals.after_setup_logger.connect(on_logging, weak=False)
    signals.after_setup_task_logger.connect(on_logging, weak=False)
    signals.worker_init.connect(on_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_process_shutdown.connect(on_process_exit, weak=False)


class Run:
    """Observes one run of the guarded transaction: use it as a context manager around the
    run and call :meth:`finished` with its results. ``headers`` are each command's message
    headers (their ``traceparent`` continues the sender's trace); ``batch`` says which mode
    the run is timed under (``batch`` or ``task``)."""

    __slots__ = ("_batch", "_done", "_payloads", "_spans", "_start", "_token")

    def __init__(
        self, payloads: Sequence[object], headers: Sequence[Mapping[str, Any] | None], batch: bool
    ) -> None:
        self._payloads = payloads
        self._batch = batch
        self._spans = (
            [
                tracing.start_command_span(p, h, len(payloads))
                for p, h in zip(payloads, headers, strict=True)
            ]
            if tracing.enabled()
            else None
        )
        self._token: Token[Mapping[str, str]] | None = None
        self._done = False
        self._start = 0.0

    def __enter__(self) -> Run:
        if self._spans:
            traced = {}
            for payload, span in zip(self._payloads, self._spans, strict=True):
                command_id = payload.get("command_id") if isinstance(payload, Mapping) else None
                parent = tracing.traceparent_of(span)
                if isinstance(command_id, str) and parent is not None:
                    traced[command_id] = parent
            self._token = context.bind(traced)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            context.unbind(self._token)
        if self._done:
            return
        if isinstance(error, NotACommand):
            self.finished([error])
        elif error is not None and self._spans:
            tracing.fail_spans(self._spans, error)

    def finished(self, results: Sequence[object]) -> None:
        """Record the run's results, one per payload, in order."""
        self._done = True
        seconds = time.perf_counter() - self._start
        size = len(self._payloads)
        if metrics.ENABLED:
            metrics.TRANSACTION_SECONDS.labels("batch" if self._batch else "task").observe(seconds)
            if self._batch:
                metrics.BATCH_COMMANDS.observe(size)
        duration_ms = round(seconds * 1000, 3)
        for index, (payload, result) in enumerate(zip(self._payloads, results, strict=True)):
            fields = outcome_fields(payload, result)
            if fields is None:
                continue  # failed alone in its batch: it meets the failure policy, not a run
            if metrics.ENABLED:
                metrics.COMMANDS.labels(fields["type"], fields["outcome"], fields["code"]).inc()
            fields["duration_ms"] = duration_ms
            fields["batch_size"] = size
            logs.log_outcome(fields)
            if self._spans:
                tracing.finish_command_span(self._spans[index], fields)


def outcome_fields(payload: object, result: object) -> dict[str, Any] | None:
    """What the metrics, the log line and the span say of one command's result."""
    raw = payload if isinstance(payload, Mapping) else {}
    if isinstance(result, StoredOutcome):
        event = result.event
        rejection = event.get("rejection") or {}
        rejected = rejection.get("code") is not None
        outcome = "replayed" if result.replayed else "rejected" if rejected else "applied"
        revision = rejection.get("current_revision") if rejected else event.get("revision")
        return {
            "command_id": event.get("command_id"),
            "request_id": event.get("request_id"),
            "type": command_type(event.get("command_type")),
            "outcome": outcome,
            "code": rejection.get("code") or "",
            "revision": revision,
        }
    if isinstance(result, NotACommand):
        return {
            "command_id": None,
            "request_id": _text(raw.get("request_id")),
            "type": command_type(raw.get("type")),
            "outcome": "not_a_command",
            "code": "",
            "revision": None,
        }
    return None


def command_type(raw: object) -> str:
    """A bounded command type: a known one, else ``invalid``."""
    if isinstance(raw, str) and raw in CommandType._value2member_map_:
        return raw
    return INVALID_TYPE


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) else None


def parked(cause: ParkCause) -> None:
    """A message was parked on the dead-letter queue for ``cause``."""
    if metrics.ENABLED:
        metrics.DEAD_LETTERS.labels(cause.value).inc()


def infrastructure_retry(error: BaseException, action: str) -> None:
    """An infrastructure fault was met; ``action`` is ``backoff`` or ``requeue``."""
    if metrics.ENABLED:
        cause = type(error.__cause__ or error).__name__
        metrics.INFRASTRUCTURE_RETRIES.labels(cause, action).inc()


def relay_ran(relayed: int) -> None:
    """An outbox sweep completed, publishing ``relayed`` events."""
    if metrics.ENABLED:
        metrics.RELAY_RUNS.inc()
        metrics.RELAYED.inc(relayed)
    _record_run("relay", relayed, read_backlog=metrics.ENABLED)


def expiry_ran(expired: int) -> None:
    """An expiry sweep completed, expiring ``expired`` requests."""
    if metrics.ENABLED:
        metrics.EXPIRY_SWEEPS.inc()
        metrics.EXPIRED.inc(expired)
    _record_run("expiry", expired, read_backlog=False)


def _record_run(task: str, handled: int, *, read_backlog: bool) -> None:
    """Record the run for ``governance status``; a failure to only costs the record."""
    try:
        with runtime.current().pool.connection() as conn:
            conn.execute(RECORD_RUN, {"task": task, "handled": handled})
            if read_backlog:
                row = conn.execute(OUTBOX_BACKLOG).fetchone()
                assert row is not None
                metrics.OUTBOX_UNPUBLISHED.set(row[0])
                metrics.OUTBOX_OLDEST.set(row[1])
    except psycopg.Error as exc:
        log.warning("could not record the %s run: %s", task, exc)
