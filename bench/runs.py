"""The measured phases: governance workloads, the hot row, and the three baselines.

Every phase starts from empty tables, publishes its setup (awaited, not timed), then its
timed commands, and reports throughput (first publish to last outcome received), latency
from each publish to its outcome, CPU per process kind, and whether each outcome was the
one the workload expected.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu
import psycopg

from bench import workloads
from bench.client import (
    Collector,
    DatagramCollector,
    EventCollector,
    InlinePublisher,
    PublisherProcess,
)
from bench.identities import Identities
from bench.naive_app import NAIVE_EVENTS_EXCHANGE, NAIVE_QUEUE, NAIVE_TASK, SCHEMA
from bench.noop_app import NOOP_QUEUE, NOOP_TASK
from bench.profile import Profiler
from bench.services import (
    CpuMeter,
    WorkerDied,
    WorkerSet,
    queues_drained,
    reset_database,
    start_workers,
)
from bench.stats import latency_summary, ms, percentile, rate
from governance.topology import COMMANDS_QUEUE, WORKER_QUEUES


class PhaseFailed(RuntimeError):
    """A phase could not finish (outcomes missing, a worker died); the report says which."""


@dataclass
class Bench:
    """Shared state of one bench run: where the services are and which workers run."""

    database_url: str
    broker_url: str
    log_dir: Path
    layout: str = "processes"
    #: The bench's private vhost, where ``rabbitmqctl`` can see its queues.
    vhost: str | None = None
    #: Extra environment of the governance workers only (tuning such as batch size).
    governance_env: dict[str, str] = field(default_factory=dict)
    #: Processes measured beside the workers, by kind (the delay proxies, when there are).
    other_processes: dict[str, list[int]] = field(default_factory=dict)
    _workers: WorkerSet | None = field(default=None, repr=False)
    _identities: Identities | None = field(default=None, repr=False)

    @property
    def identities(self) -> Identities:
        """The bench's actors and their keys (registered in the bench database)."""
        if self._identities is None:
            self._identities = Identities(self.database_url)
        return self._identities

    def meter(self, workers: WorkerSet | None) -> CpuMeter:
        """A CPU meter of the services, ``workers`` and the other processes of the run."""
        return CpuMeter(self.database_url, workers, dict(self.other_processes))

    # -- worker processes --------------------------------------------------------------------

    def worker_env(self, **extra: str) -> dict[str, str]:
        return {
            "GOVERNANCE_DATABASE_URL": self.database_url,
            "GOVERNANCE_BROKER_URL": self.broker_url,
            **extra,
        }

    def governance_worker_env(self) -> dict[str, str]:
        """The environment of a governance worker: the run's worker key, then
        ``governance_env`` (``GOVERNANCE_WORKER_KEY=""`` there: unsigned events)."""
        key_file = str(self.identities.worker_key_file(self.log_dir))
        return self.worker_env(**{"GOVERNANCE_WORKER_KEY": key_file, **self.governance_env})

    def governance_workers(self, count: int) -> WorkerSet:
        """The governance workers (``celery -A worker worker``), reused while the count holds."""
        if self._workers is not None and self._workers.count == count:
            try:
                self._workers.check()
                return self._workers
            except WorkerDied:
                pass
        self.stop_workers()
        # Every worker signs its events (a signed-mode worker refuses to start without a key).
        self._workers = start_workers(
            "worker",
            count,
            self.governance_worker_env(),
            broker_url=self.broker_url,
            queue=COMMANDS_QUEUE,
            layout=self.layout,
            log_dir=self.log_dir,
        )
        return self._workers

    def stop_workers(self) -> None:
        if self._workers is not None:
            self._stop(self._workers, (COMMANDS_QUEUE,))
            self._workers = None

    def purge(self) -> None:
        """Drop whatever a failed phase left queued, so a rerun starts from empty queues."""
        with kombu.Connection(self.broker_url) as conn:
            for name in (COMMANDS_QUEUE, NAIVE_QUEUE, NOOP_QUEUE):
                try:
                    conn.default_channel.queue_purge(name)
                except Exception:  # never declared: nothing to purge; the channel is closed
                    conn.close()
                    conn.connect()

    def drop_worker_queues(self) -> None:
        """Delete the governance worker's queues (and what they hold), so that the next
        workers declare them anew, of whatever type they are set to."""
        with kombu.Connection(self.broker_url) as conn:
            for name in WORKER_QUEUES:
                conn.channel().queue_delete(name)

    def _stop(self, workers: WorkerSet, queues: tuple[str, ...]) -> None:
        """Cold shutdown once the broker shows every message acknowledged, else warm."""
        drained = self.vhost is not None and queues_drained(self.vhost, queues)
        workers.stop(cold=drained)

    @contextlib.contextmanager
    def baseline_workers(self, app: str, queue: str, count: int, **env: str) -> Iterator[WorkerSet]:
        self.stop_workers()
        workers = start_workers(
            app,
            count,
            self.worker_env(**env),
            broker_url=self.broker_url,
            queue=queue,
            layout=self.layout,
            log_dir=self.log_dir,
        )
        try:
            yield workers
        finally:
            self._stop(workers, (queue,))

    # -- phases ------------------------------------------------------------------------------

    def workload(
        self,
        load: workloads.Workload,
        count: int,
        rate_limit: float | None = None,
        prepare: Callable[[str], dict[str, Any]] | None = None,
        profile: bool = False,
    ) -> dict[str, Any]:
        """Run one workload on ``count`` governance worker processes; ``prepare`` shapes the
        emptied database first (and says how, for the report); ``profile`` samples the
        first worker's processes (main and pool child) with py-spy during the timed part."""
        reset_database(self.database_url)
        prepared = prepare(self.database_url) if prepare is not None else None
        workers = self.governance_workers(count)
        collector = EventCollector(self.broker_url)
        collector.health = workers.check
        timed = self.identities.sign_all(load.timed)
        try:
            setup = self._setup(collector, self.identities.sign_all(load.setup))
            db_start = _db_now(self.database_url)
            profilers = (
                [
                    Profiler(pid, "worker main" if index == 0 else "pool child").start()
                    for index, pid in enumerate(workers.processes[0].pids())
                ]
                if profile
                else []
            )
            try:
                result = timed_run(
                    collector,
                    lambda: PublisherProcess(self.broker_url, timed, rate=rate_limit),
                    [c["command_id"] for c in load.timed],
                    self.meter(workers),
                    load.expected,
                )
            finally:
                profiles = [profiler.stop() for profiler in profilers]
        finally:
            collector.close()
        if profiles:
            result["profile"] = profiles
        result["outbox"] = outbox_lag(self.database_url, db_start)
        if rate_limit is not None:
            # An open-loop run only means something if the system kept up with the pace.
            achieved = result["throughput_per_s"] or 0.0
            result["kept_up_with_pace"] = achieved >= 0.95 * rate_limit
        return {
            "workload": load.name,
            "settings": load.settings if prepared is None else {**load.settings, **prepared},
            "workers": workers.description,
            "paced_rate": None if rate_limit is None else round(rate_limit, 1),
            "setup": setup,
            **result,
        }

    def _setup(self, collector: Collector, setup: list[dict[str, Any]]) -> dict[str, Any]:
        """Publish the setup commands and wait until each is applied (not timed as a figure)."""
        if not setup:
            return {}
        ids = [c["command_id"] for c in setup]
        started = time.monotonic()
        publisher = PublisherProcess(self.broker_url, setup)
        missing = collector.wait_for(ids, timeout=120 + len(ids) / 20)
        publisher.result(timeout=60)
        if missing:
            raise PhaseFailed(f"{len(missing)} setup command(s) without an outcome")
        kinds = collector.outcomes.kind_counts(ids)
        if kinds != {"applied": len(ids)}:
            raise PhaseFailed(f"setup commands not all applied: {kinds}")
        return {"commands": len(ids), "seconds": round(time.monotonic() - started, 3)}

    def hot(self, count: int, rounds: int, racers: int) -> dict[str, Any]:
        """``racers`` commands with the same expected revision on one fresh request, per round."""
        reset_database(self.database_url)
        workers = self.governance_workers(count)
        plan = [
            (self.identities.sign(sub), self.identities.sign_all(racing))
            for sub, racing in (workloads.hot_round(racers) for _ in range(rounds))
        ]
        collector = EventCollector(self.broker_url)
        collector.health = workers.check
        publisher = InlinePublisher(self.broker_url)
        try:
            setup = self._setup(collector, [sub for sub, _ in plan])
            db_start = _db_now(self.database_url)
            meter = self.meter(workers)
            meter.start()
            round_times: list[float] = []
            latencies: list[float] = []
            correct_rounds = 0
            failures: list[dict[str, int]] = []
            for _, racing in plan:
                ids = [c["command_id"] for c in racing]
                sent = publisher.publish(racing)
                missing = collector.wait_for(ids, timeout=60)
                if missing:
                    raise PhaseFailed(f"hot round: {len(missing)} racer(s) without an outcome")
                received = [collector.outcomes.received[i] for i in ids]
                round_times.append(max(received) - sent[0])
                latencies.extend(r - s for r, s in zip(received, sent, strict=True))
                kinds = collector.outcomes.kind_counts(ids)
                if kinds == {"applied": 1, "concurrency_conflict": racers - 1}:
                    correct_rounds += 1
                else:
                    failures.append(kinds)
            cpu = meter.stop()
        finally:
            publisher.close()
            collector.close()
        ordered = sorted(round_times)
        return {
            "workload": "hot",
            "settings": {"rounds": rounds, "racers": racers},
            "workers": workers.description,
            "setup": setup,
            "round_time": {
                "p50_ms": ms(percentile(ordered, 0.5)),
                "p95_ms": ms(percentile(ordered, 0.95)),
                "max_ms": ms(ordered[-1]),
            },
            "latency": latency_summary(latencies),
            "correctness": {
                "rounds": rounds,
                "correct_rounds": correct_rounds,
                "all_correct": correct_rounds == rounds,
                "expected_per_round": {"applied": 1, "concurrency_conflict": racers - 1},
                "wrong_rounds": failures[:5],
            },
            "cpu_seconds": cpu,
            "outbox": outbox_lag(self.database_url, db_start),
        }

    # -- baselines ---------------------------------------------------------------------------

    def naive(self, count: int, requests: int, publish_events: bool) -> dict[str, Any]:
        """The naive peer (``bench.naive_app``) draining the uniform workload."""
        reset_database(self.database_url)
        load = workloads.uniform(requests)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute(
                "INSERT INTO bench_naive_requests (request_id, status, revision) "
                "SELECT unnest(%s::text[]), 'created', 1",
                ([c["request_id"] for c in load.setup],),
            )
        collector: Collector
        if publish_events:
            collector = EventCollector(
                self.broker_url, NAIVE_EVENTS_EXCHANGE, "naive.#", lambda e: str(e["outcome"])
            )
            env = {"BENCH_NAIVE_PUBLISH_EVENTS": "1"}
        else:
            datagrams = DatagramCollector()
            collector = datagrams
            env = {"BENCH_SIGNAL_ADDR": datagrams.address}
        try:
            with self.baseline_workers("bench.naive_app", NAIVE_QUEUE, count, **env) as workers:
                collector.health = workers.check
                result = timed_run(
                    collector,
                    lambda: PublisherProcess(
                        self.broker_url,
                        self.identities.sign_all(load.timed),
                        task_name=NAIVE_TASK,
                        queue=NAIVE_QUEUE,
                    ),
                    [c["command_id"] for c in load.timed],
                    self.meter(workers),
                    load.expected,
                )
                description = workers.description
        finally:
            collector.close()
        return {
            "baseline": "naive_peer_with_event" if publish_events else "naive_peer",
            "settings": load.settings,
            "workers": description,
            **result,
        }

    def noop(self, count: int, messages: int) -> dict[str, Any]:
        """The no-op task's drain rate (``bench.noop_app``): the broker ceiling."""
        load = workloads.uniform(max(1, messages // 2))
        datagrams = DatagramCollector()
        try:
            with self.baseline_workers(
                "bench.noop_app", NOOP_QUEUE, count, BENCH_SIGNAL_ADDR=datagrams.address
            ) as workers:
                datagrams.health = workers.check
                result = timed_run(
                    datagrams,
                    lambda: PublisherProcess(
                        self.broker_url,
                        self.identities.sign_all(load.timed),
                        task_name=NOOP_TASK,
                        queue=NOOP_QUEUE,
                    ),
                    [c["command_id"] for c in load.timed],
                    self.meter(workers),
                    {c["command_id"]: "done" for c in load.timed},
                )
                description = workers.description
        finally:
            datagrams.close()
        return {
            "baseline": "noop_task",
            "settings": {"messages": len(load.timed)},
            "workers": description,
            **result,
        }

    def direct(self, processes: int, requests: int) -> dict[str, Any]:
        """Baseline 1, the DB limit: ``worker.transaction.apply_command`` on direct psycopg
        connections (autocommit, one per process), no broker and no publishing."""
        reset_database(self.database_url)
        self.stop_workers()
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(processes)
        results = context.Queue()
        share = max(1, requests // processes)
        loads = [workloads.uniform(share) for _ in range(processes)]
        children = [
            context.Process(
                target=_direct_main,
                args=(
                    self.database_url,
                    self.identities.sign_all(load.setup),
                    self.identities.sign_all(load.timed),
                    barrier,
                    results,
                    str(self.identities.worker_key_file(self.log_dir)),
                ),
                daemon=True,
            )
            for load in loads
        ]
        meter = self.meter(None)
        for child in children:
            child.start()
        try:
            meter.start()
            parts = [results.get(timeout=600) for _ in children]
            cpu = meter.stop()
        finally:
            for child in children:
                child.join(10)
                if child.is_alive():
                    child.kill()
        total = sum(part["commands"] for part in parts)
        begin = min(part["start"] for part in parts)
        end = max(part["end"] for part in parts)
        outcomes: Counter[str] = Counter()
        for part in parts:
            outcomes.update(part["outcomes"])
        return {
            "baseline": "direct_db",
            "settings": {"processes": processes, "requests": share * processes, "commands": total},
            "throughput_per_s": rate(total, end - begin),
            "seconds": round(end - begin, 3),
            "latency": latency_summary([x for part in parts for x in part["latencies"]]),
            "outcomes": dict(outcomes),
            "cpu_seconds": {
                **cpu,
                "direct_processes": round(sum(part["cpu"] for part in parts), 3),
            },
        }


def _direct_main(
    database_url: str,
    setup: list[dict[str, Any]],
    timed: list[dict[str, Any]],
    barrier: Any,
    results: Any,
    worker_key_file: str,
) -> None:
    """One direct-DB process: its own requests submitted untimed, then the timed commands,
    each event signed as a worker signs it."""
    from bench.client import cpu_self
    from producer.keys import load_key_file
    from worker import event_signing
    from worker.transaction import apply_command

    event_signing.install(load_key_file(worker_key_file))

    with psycopg.connect(database_url, autocommit=True) as conn:
        for payload in setup:
            apply_command(conn, payload)
        barrier.wait()
        cpu_before = cpu_self()
        latencies = []
        outcomes: Counter[str] = Counter()
        start = time.monotonic()
        for payload in timed:
            began = time.monotonic()
            stored = apply_command(conn, payload)
            latencies.append(time.monotonic() - began)
            outcomes["applied" if stored.applied else "rejected"] += 1
        end = time.monotonic()
        cpu = cpu_self() - cpu_before
    results.put(
        {
            "commands": len(timed),
            "start": start,
            "end": end,
            "latencies": latencies,
            "outcomes": dict(outcomes),
            "cpu": cpu,
        }
    )


def timed_run(
    collector: Collector,
    start_publisher: Callable[[], PublisherProcess],
    ids: list[str],
    meter: CpuMeter,
    expected: dict[str, str],
) -> dict[str, Any]:
    """Publish ``ids``' payloads from a separate process and receive every outcome."""
    meter.start()
    publisher = start_publisher()
    missing = collector.wait_for(ids, timeout=120 + len(ids) / 20)
    published = publisher.result(timeout=120)
    cpu = meter.stop(extra_harness_seconds=published.cpu_seconds)
    if missing:
        raise PhaseFailed(f"{len(missing)} of {len(ids)} command(s) without an outcome")
    received = collector.outcomes.received
    first = published.times[0]
    last = max(received[i] for i in ids)
    latencies = [received[i] - sent for i, sent in zip(ids, published.times, strict=True)]
    actual = collector.outcomes.kind_counts(ids)
    wanted = dict(Counter(expected[i] for i in ids))
    wrong = sum(1 for i in ids if collector.outcomes.kinds.get(i) != expected[i])
    return {
        "commands": len(ids),
        "throughput_per_s": rate(len(ids), last - first),
        "seconds": round(last - first, 3),
        "latency": latency_summary(latencies),
        "publish": {
            "rate_per_s": published.rate,
            "seconds": round(published.times[-1] - first, 3),
            "max_schedule_slip_ms": ms(published.max_schedule_slip),
        },
        "correctness": {
            "expected": wanted,
            "actual": actual,
            "unexpected_outcomes": wrong,
            "duplicate_deliveries": collector.outcomes.duplicates,
        },
        "cpu_seconds": cpu,
        "cpu_ms_per_command": per_command(cpu, len(ids)),
    }


def per_command(cpu: dict[str, Any], commands: int) -> dict[str, float]:
    """CPU milliseconds per command of each process kind (machine figures left out)."""
    kinds = ("worker_processes", "postgres_backends", "rabbitmq_beam", "harness", "delay_proxies")
    return {k: round(cpu[k] * 1000 / commands, 3) for k in kinds if k in cpu and commands}


def _db_now(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def outbox_lag(database_url: str, since: Any) -> dict[str, Any]:
    """``published_at - created_at`` of the outbox rows written since ``since``, and how many
    are still unpublished (the relay is not running during the bench)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   count(*) FILTER (WHERE published_at IS NULL),
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM published_at - created_at)),
                   percentile_cont(0.99) WITHIN GROUP (
                       ORDER BY extract(epoch FROM published_at - created_at)),
                   max(extract(epoch FROM published_at - created_at))
            FROM outbox_events WHERE created_at >= %s
            """,
            (since,),
        ).fetchone()
    assert row is not None
    rows, unpublished, p50, p99, worst = row
    return {
        "rows": rows,
        "unpublished": unpublished,
        "lag_p50_ms": None if p50 is None else ms(float(p50)),
        "lag_p99_ms": None if p99 is None else ms(float(p99)),
        "lag_max_ms": None if worst is None else ms(float(worst)),
    }
