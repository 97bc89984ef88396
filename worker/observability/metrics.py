"""The worker's Prometheus metrics, correct under Celery's prefork pool.

Every process of a worker (the main process, which runs the batch consumer, and each pool
child) records into ``PROMETHEUS_MULTIPROC_DIR``; the main process serves the sum of all of
them on ``GOVERNANCE_METRICS_PORT``. Without that port nothing is recorded at all.

Label values are bounded: command types are the known ones or ``invalid``, outcomes and
rejection codes come from closed sets, causes are exception class names or a fixed list.
No request or command id is ever a label.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterable

PORT_VARIABLE = "GOVERNANCE_METRICS_PORT"
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess_dir() -> str | None:
    """The directory the processes share, made when metrics are on and none is given.

    prometheus_client picks its multiprocess value store when it is first imported, so this
    runs before that import.
    """
    if not os.environ.get(PORT_VARIABLE):
        return None
    given = os.environ.get(MULTIPROCESS_VARIABLE)
    if given:
        os.makedirs(given, exist_ok=True)
        return given
    made = tempfile.mkdtemp(prefix="governance-metrics-")
    os.environ[MULTIPROCESS_VARIABLE] = made
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(made, ignore_errors=True)

    atexit.register(remove)
    return made


MULTIPROCESS_DIR = _multiprocess_dir()
#: Whether this worker records metrics (``GOVERNANCE_METRICS_PORT`` is set).
ENABLED = MULTIPROCESS_DIR is not None

from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LAG = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

COMMANDS = Counter(
    "governance_commands",
    "Commands the worker answered, by command type (or invalid), outcome (applied, rejected, "
    "replayed: a redelivery answered from the ledger, not_a_command) and rejection code",
    ["type", "outcome", "code"],
)
TRANSACTION_SECONDS = Histogram(
    "governance_transaction_duration_seconds",
    "One run of the guarded transaction (one command, or one batch), from the first attempt "
    "to its commit and the immediate publication of its events",
    ["mode"],
    buckets=_SECONDS,
)
BATCH_COMMANDS = Histogram(
    "governance_batch_size_commands",
    "Commands per batch in batch mode",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
OUTBOX_LAG = Histogram(
    "governance_outbox_lag_seconds",
    "From an outcome event's write to the broker's confirm of its publication, by who "
    "published it (writer: right after commit; relay: the outbox sweep)",
    ["publisher"],
    buckets=_LAG,
)
OUTBOX_UNPUBLISHED = Gauge(
    "governance_outbox_unpublished_events",
    "Outcome events not yet published, as the relay last counted them",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST = Gauge(
    "governance_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outcome event (0 when none), as the relay last saw it",
    multiprocess_mode="mostrecent",
)
RELAY_RUNS = Counter("governance_relay_runs", "Outbox relay sweeps that completed")
RELAYED = Counter("governance_relay_events", "Outcome events the relay published")
DEAD_LETTERS = Counter(
    "governance_dead_letters",
    "Messages the worker parked on the dead-letter queue, by cause",
    ["cause"],
)
EXPIRY_SWEEPS = Counter("governance_expiry_sweeps", "Expiry sweeps that completed")
EXPIRED = Counter("governance_requests_expired", "Pending requests the expiry sweeps expired")
INFRASTRUCTURE_RETRIES = Counter(
    "governance_infrastructure_retries",
    "Infrastructure faults met while applying commands, by cause (the underlying error's "
    "class) and action (backoff: retried in process; requeue: the message went back to "
    "the broker)",
    ["cause", "action"],
)


def outbox_published(lags: Iterable[float], publisher: str) -> None:
    """Record the write-to-publication lag of events just marked published."""
    if not ENABLED:
        return
    histogram = OUTBOX_LAG.labels(publisher)
    for lag in lags:
        histogram.observe(lag)


def serve(port: int) -> None:
    """Serve every process's metrics on ``port`` (from the main process only)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)


def process_exited(pid: int) -> None:
    """Drop the live gauges of a pool process that exited (its counters are kept)."""
    if ENABLED:
        multiprocess.mark_process_dead(pid)
