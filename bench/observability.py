"""``python -m bench observability``: what metrics and tracing cost.

The uniform workload at the largest worker count, with observability off (no metrics port,
the OpenTelemetry API's no-op) and on (metrics recorded in multiprocess mode and served, an
OpenTelemetry SDK with a batch span processor whose exporter drops the spans), alternated
twice in one run so neither always runs on the fresher database.

Imported by Celery as ``celery -A bench.observability`` it is the worker app with that SDK
installed first: asking the module for ``app`` installs it and hands out ``worker.app.app``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench import workloads
from bench.runs import Bench
from bench.services import WorkerSet, start_workers
from bench.stats import ratio
from governance.topology import COMMANDS_QUEUE

if TYPE_CHECKING:
    from bench.__main__ import Run

#: The target: observability on costs at most this fraction of the throughput.
TARGET = ("observability_throughput_cost", ("<=", 0.05))

KEY = "observability"
TRACED_APP = "bench.observability"
#: Each worker process serves on its own port from this one up.
METRICS_PORT = 19_400


@dataclass
class ObservedBench(Bench):
    """The bench, with the governance workers started from ``app``."""

    app: str = "worker"

    def governance_workers(self, count: int) -> WorkerSet:
        if self._workers is not None and self._workers.count == count:
            return self._workers
        self.stop_workers()
        self._workers = start_workers(
            self.app,
            count,
            self.governance_worker_env(),
            broker_url=self.broker_url,
            queue=COMMANDS_QUEUE,
            layout=self.layout,
            log_dir=self.log_dir,
        )
        return self._workers


def run(phases: Run) -> None:
    """The off/on phases, alternated twice, into ``phases.results["observability"]``."""
    count = max(phases.args.worker_counts)
    requests = phases.size("uniform_requests")
    base = phases.bench
    base.stop_workers()
    observed = ObservedBench(
        base.database_url,
        base.broker_url,
        base.log_dir,
        layout=base.layout,
        vhost=base.vhost,
        governance_env=dict(base.governance_env),
    )
    phases.bench = observed
    try:
        for attempt, mode in enumerate(("off", "on", "off", "on"), start=1):
            observed.stop_workers()
            observed.app = TRACED_APP if mode == "on" else "worker"
            observed.governance_env = {**phases.args.worker_env, **_env(mode, attempt)}
            phases.phase(
                KEY,
                f"{mode} {count}w #{(attempt + 1) // 2}",
                partial(observed.workload, workloads.uniform(requests), count),
            )
    finally:
        observed.stop_workers()
        phases.bench = base


def _env(mode: str, attempt: int) -> dict[str, str]:
    if mode == "off":
        return {"GOVERNANCE_METRICS_PORT": "", "OTEL_TRACES_EXPORTER": "none"}
    # One port for the run: with several worker processes only the first serves it, but
    # every process records (what costs), each in a directory of its own.
    return {"GOVERNANCE_METRICS_PORT": str(METRICS_PORT + attempt), "OTEL_TRACES_EXPORTER": "none"}


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Mean throughput of each mode and the cost of observability (1 - on/off)."""
    phases = results.get(KEY, {})
    by_mode = {
        mode: [v["throughput_per_s"] for k, v in phases.items() if k.startswith(mode + " ")]
        for mode in ("off", "on")
    }
    if not (by_mode["off"] and by_mode["on"]):
        return {}
    off, on = (_mean(by_mode[mode]) for mode in ("off", "on"))
    # On a shared machine throughput swings with the neighbours; the workers' own CPU time
    # per command is the steadier measure of what the instrumentation costs.
    cpu = {
        mode: _mean(
            [
                v.get("cpu_ms_per_command", {}).get("worker_processes")
                for k, v in phases.items()
                if k.startswith(mode + " ")
            ]
        )
        for mode in ("off", "on")
    }
    return {
        "observability_throughput_per_s": {"off": off, "on": on},
        "observability_throughput_cost": ratio(
            None if off is None or on is None else off - on, off
        ),
        "observability_worker_cpu_ms_per_command": cpu,
        "observability_worker_cpu_cost": ratio(
            None if cpu["on"] is None or cpu["off"] is None else cpu["on"] - cpu["off"],
            cpu["off"],
        ),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return round(sum(numbers) / len(numbers), 3) if numbers else None


def _traced_worker_app() -> Any:
    """The worker app, with an SDK whose spans are made, batched and dropped."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    from worker.app import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _traced_worker_app()
    raise AttributeError(name)
