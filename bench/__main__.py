"""``python -m bench WORKLOAD``: start workers, run a workload, print one JSON document.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import observability, workloads
from bench.delay_proxy import DelayProxy
from bench.policy_check import large_policy
from bench.runs import Bench
from bench.services import (
    DEFAULT_BROKER_URL,
    DEFAULT_SERVER_URL,
    WorkerDied,
    apply_policy,
    fresh_database,
    grow_history,
    grow_outbox,
    machine_info,
    private_vhost,
    worker_log_dir,
)
from bench.stats import best_run, ratio

WORKLOADS = (
    "uniform",
    "hot",
    "approvals",
    "mixed",
    "baselines",
    "auth",
    "events",
    "backlog",
    "growth",
    "observability",
    "queues",
    "policy",
    "network",
    "profile",
    "all",
)

#: The one setting that turns the adaptive batch consumer off.
PER_TASK = {"GOVERNANCE_BATCH_SIZE": "1"}

#: Sizes at ``--scale 1``.
SIZES = {
    "uniform_requests": 10_000,  # x2 commands: 20,000 timed commands
    "half_load_commands": 4_000,
    "half_load_max_seconds": 30,
    "hot_rounds": 100,
    "approvals_requests": 1_000,  # x4 timed commands
    "mixed_requests": 2_500,  # x2: 5,000 timed commands
    "direct_requests": 2_000,  # x2: 4,000 timed transactions per process count
    "naive_requests": 2_500,  # x2: 5,000 timed commands per worker count and variant
    "noop_messages": 5_000,
    "backlog_outbox_rows": 1_000_000,  # events of other requests already in the outbox
    "backlog_unpublished": 50_000,  # of which left unpublished in the backlog phase
    "growth_requests": 1_000_000,  # requests of others already in the database
    "growth_outbox_rows": 5_000_000,  # and their events, each with a ledger row
    "network_requests": 2_000,  # x2 commands per mode behind the delay proxies
    "profile_requests": 2_500,  # x2 commands per mode with py-spy attached
    "policy_submits": 10_000,  # timed submits per phase of the policy workload
    "policy_rules": 200,  # rules of the policy it decides them under (not scaled)
}

#: The targets (ratios measured in one run).
TARGETS = {
    "uniform_over_noop": (">=", 1.0),
    "uniform_over_naive": (">=", 2.0),
    "half_load_p50_over_direct_p50": ("<=", 2.0),
    "half_load_p99_over_p50": ("<=", 4.0),
    "hot_round_p50_over_direct_p50": ("<=", 30.0),
    "network_2ms_default_over_naive": (">=", 3.0),
    "auth_signed_throughput_cost": ("<=", 0.10),
    "policy_required_throughput_cost": ("<=", 0.05),
    "quorum_over_classic": (">=", 0.5),
    "backlog_throughput_over_no_backlog": (">=", 0.8),
    "growth_throughput_over_empty": (">=", 0.9),
    observability.TARGET[0]: observability.TARGET[1],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument(
        "--workers", default="1,2,4", help="worker process counts, comma-separated (1,2,4)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument(
        "--sweep-fraction",
        type=float,
        default=0.25,
        help="uniform size at worker counts below the largest, as a fraction (0.25)",
    )
    parser.add_argument(
        "--history-scale",
        type=float,
        default=1.0,
        help="growth: multiplies the existing history (1,000,000 requests, 5,000,000 events) "
        "apart from --scale, which sizes the timed workload (1.0)",
    )
    parser.add_argument("--racers", type=int, default=50, help="hot: racers per round (50)")
    parser.add_argument(
        "--rtt-ms",
        default="0.5,2",
        help="network: emulated round trips to PostgreSQL and RabbitMQ, ms, comma-separated",
    )
    parser.add_argument(
        "--layout",
        choices=("processes", "concurrency"),
        default="processes",
        help="N worker processes as N `celery worker --concurrency 1` (processes, default) "
        "or as one `celery worker --concurrency N` (concurrency)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GOVERNANCE_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
        help="PostgreSQL server (maintenance database URL); the bench creates its own database",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("GOVERNANCE_BENCH_BROKER_URL", DEFAULT_BROKER_URL),
        help="RabbitMQ; a private vhost is made on it when rabbitmqctl is available",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the governance workers, e.g. GOVERNANCE_BATCH_SIZE=50 "
        "(repeatable; GOVERNANCE_* variables of the bench's own environment apply too)",
    )
    parser.add_argument("--out", default="bench/results/latest.json", help="JSON output file")
    args = parser.parse_args(argv)
    try:
        args.worker_env = dict(item.split("=", 1) for item in args.worker_env)
    except ValueError:
        parser.error("--worker-env takes NAME=VALUE")
    args.worker_counts = sorted({int(n) for n in args.workers.split(",") if n.strip()})
    try:
        args.round_trips = [float(x) for x in args.rtt_ms.split(",") if x.strip()]
    except ValueError:
        parser.error("--rtt-ms takes numbers")
    if not args.round_trips or min(args.round_trips) < 0:
        parser.error("--rtt-ms needs round trips of 0 ms or more")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers needs positive counts")
    return args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class Run:
    """One invocation: the phases it runs and the report they fill."""

    def __init__(self, args: argparse.Namespace, bench: Bench) -> None:
        self.args = args
        self.bench = bench
        self.results: dict[str, Any] = {}
        self.errors: list[dict[str, str]] = []
        self.retried: list[str] = []

    def size(self, name: str, minimum: int = 1) -> int:
        return workloads.scaled(SIZES[name], self.args.scale, minimum)

    def phase(self, key: str, label: str, run: Callable[[], dict[str, Any]]) -> None:
        """Run one phase; a failure is recorded and the run goes on to the next phase."""
        print(f"[bench] {key} {label} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            try:
                result = run()
            except WorkerDied as died:
                # Something outside the bench ended a worker (the machine is shared): the
                # phase is run once more on fresh workers, and the report says so.
                print(f"[bench] {key} {label}: {died}; running it again", file=sys.stderr)
                self.bench.stop_workers()
                self.bench.purge()
                self.retried.append(f"{key} {label}: {str(died).splitlines()[0]}")
                result = run()
        except Exception as exc:
            self.errors.append(
                {"phase": label, "error": repr(exc), "trace": traceback.format_exc()}
            )
            print(f"[bench] {key} {label} FAILED: {exc!r}", file=sys.stderr, flush=True)
            self.bench.stop_workers()
            with contextlib.suppress(Exception):
                self.bench.purge()
            return
        result["phase_wall_seconds"] = round(time.monotonic() - started, 1)
        self.results.setdefault(key, {})[label] = result
        summary = result.get("throughput_per_s") or result.get("round_time")
        print(f"[bench] {key} {label}: {summary}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def worker_settings(self, env: dict[str, str]) -> Iterator[None]:
        """Governance workers with ``env`` over ``--worker-env``: fresh ones before and after."""
        self.bench.stop_workers()
        self.bench.governance_env = {**self.args.worker_env, **env}
        try:
            yield
        finally:
            self.bench.stop_workers()
            self.bench.governance_env = dict(self.args.worker_env)

    def uniform(self, key: str = "uniform", counts: list[int] | None = None) -> None:
        """The uniform workload flat out at each worker count, then paced at half the best
        rate on the count that reached it (``<key>_half_load``)."""
        counts = counts or self.args.worker_counts
        largest = max(counts)
        for count in counts:
            requests = self.size("uniform_requests")
            if count != largest:
                requests = max(1, round(requests * self.args.sweep_fraction))
            self.phase(
                key,
                f"{count}w",
                partial(self.bench.workload, workloads.uniform(requests), count),
            )
        runs = self.results.get(key, {})
        measured = {k: v["throughput_per_s"] for k, v in runs.items() if v["throughput_per_s"]}
        if not measured:
            return
        best = max(measured, key=lambda k: measured[k])
        paced = measured[best] / 2
        commands = min(
            self.size("half_load_commands", 2), max(2, int(paced * SIZES["half_load_max_seconds"]))
        )
        count = runs[best]["workers"]["worker_processes"]
        self.phase(
            f"{key}_half_load",
            f"{count}w@{paced:.0f}/s",
            partial(self.bench.workload, workloads.uniform(max(1, commands // 2)), count, paced),
        )

    def per_task(self) -> None:
        """The same, in per-task mode, at the largest worker count; then the default mode
        paced at per-task mode's half-load rate (``uniform_at_per_task_half_load``): the two
        modes' latency at one moderate load."""
        with self.worker_settings(PER_TASK):
            self.uniform("uniform_per_task", [max(self.args.worker_counts)])
        half = next(iter(self.results.get("uniform_per_task_half_load", {}).values()), None)
        if half is None or not half.get("paced_rate"):
            return
        paced = float(half["paced_rate"])
        count = half["workers"]["worker_processes"]
        commands = half["commands"]
        self.phase(
            "uniform_at_per_task_half_load",
            f"{count}w@{paced:.0f}/s",
            partial(self.bench.workload, workloads.uniform(max(1, commands // 2)), count, paced),
        )

    def profile(self) -> None:
        """Where the workers' CPU goes: a shorter uniform run per mode with py-spy sampling
        the first worker's main process and pool child."""
        count = max(self.args.worker_counts)
        requests = self.size("profile_requests")
        for mode, env in (("default", {}), ("per-task", PER_TASK)):
            with self.worker_settings(env):
                self.phase(
                    "profile",
                    f"{mode} {count}w",
                    partial(self.bench.workload, workloads.uniform(requests), count, profile=True),
                )

    def network(self, round_trips: list[float] | None = None, fraction: float = 1.0) -> None:
        """Every mode and baseline with PostgreSQL and RabbitMQ behind a delay proxy each, at
        each round trip (``--rtt-ms``): the uniform workload in the default and in per-task
        mode, the naive peer and the no-op task, at the largest worker count."""
        count = max(self.args.worker_counts)
        requests = max(1, round(self.size("network_requests") * fraction))
        for rtt in round_trips or self.args.round_trips:
            runs: list[tuple[str, dict[str, str], Callable[[], dict[str, Any]]]] = [
                ("default", {}, partial(self.bench.workload, workloads.uniform(requests), count)),
                (
                    "per-task",
                    PER_TASK,
                    partial(self.bench.workload, workloads.uniform(requests), count),
                ),
                ("naive peer", {}, partial(self.bench.naive, count, requests, False)),
                ("noop", {}, partial(self.bench.noop, count, 2 * requests)),
            ]
            for mode, env, measure in runs:
                self.phase(
                    "network",
                    f"{mode} {count}w {rtt:g}ms",
                    partial(self._behind_proxies, rtt, env, measure),
                )

    def _behind_proxies(
        self, rtt_ms: float, env: dict[str, str], measure: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        bench = self.bench
        original = (bench.database_url, bench.broker_url)
        with (
            DelayProxy(_host_port(bench.database_url, 5432), rtt_ms) as database_proxy,
            DelayProxy(_host_port(bench.broker_url, 5672), rtt_ms) as broker_proxy,
            self.worker_settings(env),
        ):
            bench.database_url = _through(original[0], database_proxy.port)
            bench.broker_url = _through(original[1], broker_proxy.port)
            bench.other_processes = {"delay_proxies": [database_proxy.pid, broker_proxy.pid]}
            try:
                result = measure()
            finally:
                # The workers are stopped by ``worker_settings`` on the way out, before the
                # proxies they talk through.
                bench.database_url, bench.broker_url = original
                bench.other_processes = {}
        result["emulated_round_trip_ms"] = rtt_ms
        return result

    def others(self, names: tuple[str, ...], counts: list[int]) -> None:
        for count in counts:
            if "hot" in names:
                rounds = self.size("hot_rounds")
                self.phase(
                    "hot", f"{count}w", partial(self.bench.hot, count, rounds, self.args.racers)
                )
            if "approvals" in names:
                requests = self.size("approvals_requests")
                self.phase(
                    "approvals",
                    f"{count}w",
                    partial(self.bench.workload, workloads.approvals(requests), count),
                )
            if "mixed" in names:
                requests = self.size("mixed_requests")
                self.phase(
                    "mixed",
                    f"{count}w",
                    partial(self.bench.workload, workloads.mixed(requests), count),
                )

    def auth(self) -> None:
        """The price of proving every command's author: the uniform workload at the largest
        worker count with ``GOVERNANCE_AUTH=off`` and ``signed``, alternated twice in one run
        (so neither mode always runs on the fresher database; the commands are signed either
        way, ``off`` only skips their verification)."""
        count = max(self.args.worker_counts)
        requests = self.size("uniform_requests")
        for attempt, mode in enumerate(("off", "signed", "off", "signed"), start=1):
            with self.worker_settings({"GOVERNANCE_AUTH": mode}):
                self.phase(
                    "auth",
                    f"{mode} {count}w #{(attempt + 1) // 2}",
                    partial(self.bench.workload, workloads.uniform(requests), count),
                )

    def events(self) -> None:
        """The price of signing every outcome event: the uniform workload at the largest
        worker count (default mode, adaptive batches) with the workers' key and without,
        alternated twice in one run. Both run ``GOVERNANCE_AUTH=off``, since a worker in
        signed mode refuses to start without a key; signing an event costs the same in
        either mode (what verifying the commands costs is ``bench auth``)."""
        count = max(self.args.worker_counts)
        requests = self.size("uniform_requests")
        key_file = str(self.bench.identities.worker_key_file(self.bench.log_dir))
        for attempt, mode in enumerate(("unsigned", "signed", "unsigned", "signed"), start=1):
            env = {"GOVERNANCE_AUTH": "off", "GOVERNANCE_WORKER_KEY": ""}
            if mode == "signed":
                env["GOVERNANCE_WORKER_KEY"] = key_file
            with self.worker_settings(env):
                self.phase(
                    "events",
                    f"{mode} {count}w #{(attempt + 1) // 2}",
                    partial(self.bench.workload, workloads.uniform(requests), count),
                )

    def policy(self) -> None:
        """The price of the deployment's approval policy at submit: timed submits at the
        largest worker count in requester mode and in the default (required) mode under a
        policy of ``policy_rules`` rules, none of which matches the bench's requests, so
        every submit is evaluated against all of them before the catch-all; alternated twice
        in one run."""
        count = max(self.args.worker_counts)
        submits = self.size("policy_submits")
        apply_policy(self.bench.database_url, large_policy(SIZES["policy_rules"]))
        for attempt, mode in enumerate(("requester", "required", "requester", "required"), 1):
            with self.worker_settings({"GOVERNANCE_POLICY": mode}):
                self.phase(
                    "policy",
                    f"{mode} {count}w #{(attempt + 1) // 2}",
                    partial(self.bench.workload, workloads.submits(submits), count),
                )

    def queues(self) -> None:
        """What replicated command queues cost: the uniform workload at the largest worker
        count with ``GOVERNANCE_QUEUE_TYPE=classic`` and ``quorum``, alternated twice in one
        run on one node. The worker queues are deleted between phases (RabbitMQ refuses to
        redeclare a queue as another type)."""
        count = max(self.args.worker_counts)
        requests = self.size("uniform_requests")
        for attempt, kind in enumerate(("classic", "quorum", "classic", "quorum"), start=1):
            with self.worker_settings({"GOVERNANCE_QUEUE_TYPE": kind}):
                self.bench.drop_worker_queues()
                self.phase(
                    "queues",
                    f"{kind} {count}w #{(attempt + 1) // 2}",
                    partial(self.bench.workload, workloads.uniform(requests), count),
                )
        self.bench.drop_worker_queues()

    def backlog(self) -> None:
        """A backlog of unpublished events of other requests must not slow every command: the
        uniform workload at the largest worker count on an outbox already holding events of
        other requests, without and then with a backlog among them."""
        count = max(self.args.worker_counts)
        requests = self.size("uniform_requests")
        rows = self.size("backlog_outbox_rows")
        every = max(1, rows // self.size("backlog_unpublished"))
        for label, unpublished in (("no backlog", None), ("backlog", every)):
            self.phase(
                "backlog",
                f"{label} {count}w",
                partial(
                    self.bench.workload,
                    workloads.uniform(requests),
                    count,
                    prepare=grow_outbox(rows, unpublished),
                ),
            )

    def growth(self) -> None:
        """Cost as data grows: the uniform workload at the largest worker count on an empty
        database, then on one already holding a million requests and five million events
        (with their ledger rows), then empty again (the two empty phases bound the drift)."""
        count = max(self.args.worker_counts)
        requests = self.size("uniform_requests")
        grown = grow_history(
            workloads.scaled(SIZES["growth_requests"], self.args.history_scale, 1),
            workloads.scaled(SIZES["growth_outbox_rows"], self.args.history_scale, 1),
        )
        for label, prepare in (("empty #1", None), ("grown", grown), ("empty #2", None)):
            self.phase(
                "growth",
                f"{label} {count}w",
                partial(self.bench.workload, workloads.uniform(requests), count, prepare=prepare),
            )

    def baselines(self) -> None:
        self.bench.stop_workers()
        for count in self.args.worker_counts:
            direct = self.size("direct_requests", count)
            self.phase("direct_db", f"{count}p", partial(self.bench.direct, count, direct))
        for count in self.args.worker_counts:
            naive = self.size("naive_requests")
            self.phase("naive_peer", f"{count}w", partial(self.bench.naive, count, naive, False))
            self.phase(
                "naive_peer_with_event",
                f"{count}w",
                partial(self.bench.naive, count, naive, True),
            )
        for count in self.args.worker_counts:
            noop = self.size("noop_messages", 2)
            self.phase("noop_task", f"{count}w", partial(self.bench.noop, count, noop))


def _host_port(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or default_port}"


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the local proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _best(results: dict[str, Any], key: str) -> float | None:
    best = best_run(results, key)
    return None if best is None else best[1]


def _at(results: dict[str, Any], key: str, label: str, *path: str) -> Any:
    value: Any = results.get(key, {}).get(label)
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def _mode_cost(results: dict[str, Any], key: str, base: str, costly: str) -> dict[str, Any] | None:
    """Two modes of one workload, alternated in one run (phases labelled ``<mode> ...``):
    each mode's mean throughput and CPU per command, and what ``costly`` costs against
    ``base`` as a fraction of ``base``'s throughput."""
    phases = results.get(key, {})
    by_mode = {
        mode: [v for k, v in phases.items() if k.startswith(mode + " ")] for mode in (costly, base)
    }
    if not (by_mode[costly] and by_mode[base]):
        return None
    throughput = {
        mode: _mean([v["throughput_per_s"] for v in runs]) for mode, runs in by_mode.items()
    }
    slow, fast = throughput[costly], throughput[base]
    return {
        "throughput_per_s": throughput,
        "cost": ratio(None if slow is None or fast is None else fast - slow, fast),
        "cpu_ms_per_command": {
            mode: {
                kind: _mean([v.get("cpu_ms_per_command", {}).get(kind) for v in runs])
                for kind in ("worker_processes", "postgres_backends", "rabbitmq_beam", "harness")
            }
            for mode, runs in by_mode.items()
        },
    }


def ratios(results: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    """The target ratios, from whatever phases ran."""
    out: dict[str, Any] = {}
    best_uniform = _best(results, "uniform")
    out["uniform_over_naive"] = ratio(best_uniform, _best(results, "naive_peer"))
    out["uniform_over_naive_with_event"] = ratio(
        best_uniform, _best(results, "naive_peer_with_event")
    )
    out["uniform_over_noop"] = ratio(best_uniform, _best(results, "noop_task"))
    out["uniform_over_direct_db"] = ratio(best_uniform, _best(results, "direct_db"))
    per_count: dict[str, Any] = {}
    for count in counts:
        ours = _at(results, "uniform", f"{count}w", "throughput_per_s")
        per_count[f"{count}w"] = {
            "uniform_over_naive": ratio(
                ours, _at(results, "naive_peer", f"{count}w", "throughput_per_s")
            ),
            "uniform_over_noop": ratio(
                ours, _at(results, "noop_task", f"{count}w", "throughput_per_s")
            ),
        }
    out["per_worker_count"] = per_count
    per_task = _best(results, "uniform_per_task")
    out["per_task_over_naive"] = ratio(per_task, _best(results, "naive_peer"))
    out["per_task_over_noop"] = ratio(per_task, _best(results, "noop_task"))
    out["uniform_over_per_task"] = ratio(best_uniform, per_task)
    direct_p50 = _at(results, "direct_db", f"{min(counts)}p", "latency", "p50_ms")
    for prefix, key in (
        ("", "uniform_half_load"),
        ("per_task_", "uniform_per_task_half_load"),
        ("at_per_task_", "uniform_at_per_task_half_load"),
    ):
        half = next(iter(results.get(key, {}).values()), None)
        if half is not None:
            p50, p99 = half["latency"].get("p50_ms"), half["latency"].get("p99_ms")
            out[f"{prefix}half_load_p50_over_direct_p50"] = ratio(p50, direct_p50)
            out[f"{prefix}half_load_p99_over_p50"] = ratio(p99, p50)
    # With several counts (``python -m bench hot``), the largest one's rounds.
    hot = next(reversed(results.get("hot", {}).values()), None)
    if hot is not None:
        out["hot_round_p50_over_direct_p50"] = ratio(hot["round_time"]["p50_ms"], direct_p50)
        out["hot_round_max_over_direct_p50"] = ratio(hot["round_time"]["max_ms"], direct_p50)
        out["hot_all_correct"] = hot["correctness"]["all_correct"]
    out["direct_single_transaction_p50_ms"] = direct_p50
    backlog = results.get("backlog", {})
    without = next((v for k, v in backlog.items() if k.startswith("no backlog")), None)
    with_backlog = next((v for k, v in backlog.items() if k.startswith("backlog")), None)
    if without is not None and with_backlog is not None:
        out["backlog_throughput_over_no_backlog"] = ratio(
            with_backlog["throughput_per_s"], without["throughput_per_s"]
        )
    growth = results.get("growth", {})
    empty = [v["throughput_per_s"] for k, v in growth.items() if k.startswith("empty")]
    grown_phase = next((v for k, v in growth.items() if k.startswith("grown")), None)
    if empty and grown_phase is not None:
        out["growth_throughput_per_s"] = {
            "empty": round(sum(empty) / len(empty), 2),
            "grown": grown_phase["throughput_per_s"],
        }
        out["growth_throughput_over_empty"] = ratio(
            grown_phase["throughput_per_s"], sum(empty) / len(empty)
        )
    for key, base, costly in (
        ("auth", "off", "signed"),
        ("events", "unsigned", "signed"),
        ("policy", "requester", "required"),
    ):
        compared = _mode_cost(results, key, base, costly)
        if compared is not None:
            out[f"{key}_throughput_per_s"] = compared["throughput_per_s"]
            out[f"{key}_{costly}_throughput_cost"] = compared["cost"]
            out[f"{key}_cpu_ms_per_command"] = compared["cpu_ms_per_command"]
    queues = results.get("queues", {})
    by_kind = {
        kind: [v["throughput_per_s"] for k, v in queues.items() if k.startswith(kind + " ")]
        for kind in ("quorum", "classic")
    }
    if by_kind["quorum"] and by_kind["classic"]:
        means = {kind: _mean(rates) for kind, rates in by_kind.items()}
        out["queue_type_throughput_per_s"] = means
        out["quorum_over_classic"] = ratio(means["quorum"], means["classic"])
    out.update(network_ratios(results.get("network", {})))
    return out


def network_ratios(network: dict[str, Any]) -> dict[str, Any]:
    """Per emulated round trip: the default mode against per-task mode and the baselines,
    and what the proxies themselves cost per command."""
    out: dict[str, Any] = {}
    by_rtt: dict[float, dict[str, Any]] = {}
    for label, phase in network.items():
        mode = label.split(" ")[0] if not label.startswith("naive peer") else "naive"
        by_rtt.setdefault(phase.get("emulated_round_trip_ms", 0.0), {})[mode] = phase
    for rtt, phases in sorted(by_rtt.items()):
        rates = {mode: phase.get("throughput_per_s") for mode, phase in phases.items()}
        name = f"network_{rtt:g}ms".replace(".", "_")
        out[f"{name}_throughput_per_s"] = rates
        out[f"{name}_default_over_naive"] = ratio(rates.get("default"), rates.get("naive"))
        out[f"{name}_default_over_noop"] = ratio(rates.get("default"), rates.get("noop"))
        out[f"{name}_default_over_per_task"] = ratio(rates.get("default"), rates.get("per-task"))
        out[f"{name}_proxy_cpu_ms_per_command"] = {
            mode: phase.get("cpu_ms_per_command", {}).get("delay_proxies")
            for mode, phase in phases.items()
        }
    return out


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if v is not None]
    return round(sum(numbers) / len(numbers), 3) if numbers else None


def targets(computed: dict[str, Any]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    for name, (op, bound) in TARGETS.items():
        value = computed.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        verdicts[name] = {"target": f"{op} {bound}", "value": value, "met": met}
    return verdicts


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["console"]:
        # The console's workload drives a browser: its own harness (bench/console.py).
        from bench import console

        return console.main(given[1:])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": started.isoformat(timespec="seconds"),
        "settings": {
            "workload": args.workload,
            "worker_counts": args.worker_counts,
            "scale": args.scale,
            "sizes_at_scale_1": SIZES,
            "sweep_fraction": args.sweep_fraction,
            "racers": args.racers,
            "layout": args.layout,
            "publisher": "separate process, Celery send_task, no publisher confirms",
            "subscriber": "harness process, exclusive queue bound to governance.events "
            "'transition.#', no_ack",
            "uniform_submits": "pre-submitted and awaited before timing (not counted)",
            "worker_env": {
                **{
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith("GOVERNANCE_") and "URL" not in k
                },
                **args.worker_env,
            },
        },
    }
    run: Run | None = None
    with contextlib.ExitStack() as stack:
        try:
            database_url = stack.enter_context(fresh_database(args.database_url))
            broker_url, private = stack.enter_context(private_vhost(args.broker_url))
            log_dir = Path(stack.enter_context(worker_log_dir()))
            vhost = urlsplit(broker_url).path.lstrip("/") if private else None
            bench = Bench(
                database_url,
                broker_url,
                log_dir,
                layout=args.layout,
                vhost=vhost,
                governance_env=args.worker_env,
            )
            stack.callback(bench.stop_workers)
            report["machine"] = machine_info(database_url, broker_url)
            report["settings"]["private_vhost"] = private
            run = Run(args, bench)
            largest = [max(args.worker_counts)]
            if args.workload in ("uniform", "all"):
                run.uniform()
            if args.workload == "all":
                run.per_task()
            if args.workload == "all":
                run.others(("hot", "approvals", "mixed"), largest)
            elif args.workload in ("hot", "approvals", "mixed"):
                run.others((args.workload,), args.worker_counts)
            if args.workload in ("baselines", "all"):
                run.baselines()
            if args.workload == "auth":
                run.auth()
            if args.workload == "events":
                run.events()
            if args.workload == "backlog":
                run.backlog()
            if args.workload == "growth":
                run.growth()
            if args.workload == "queues":
                run.queues()
            if args.workload == "policy":
                run.policy()
            if args.workload == "observability":
                observability.run(run)
            if args.workload == "network":
                run.network()
            if args.workload == "all":
                # The one emulated network the targets name, at half the subcommand's size.
                run.network([2.0], fraction=0.5)
            if args.workload in ("profile", "all"):
                run.profile()
        except BaseException as exc:
            report.setdefault("fatal", repr(exc))
            if not isinstance(exc, Exception):
                raise
    results = run.results if run is not None else {}
    report["results"] = results
    computed = {**ratios(results, args.worker_counts), **observability.ratios(results)}
    report["ratios"] = computed
    report["targets"] = targets(computed)
    report["errors"] = run.errors if run is not None else []
    report["retried_phases"] = run.retried if run is not None else []
    report["wall_seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 1 if report["errors"] or "fatal" in report else 0


if __name__ == "__main__":
    sys.exit(main())
