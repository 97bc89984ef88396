"""The benchmark harness, run end to end at tiny sizes so it cannot rot.

No figure is asserted (timings on a shared machine prove nothing); what is asserted is that
the harness runs every workload and baseline against real services, that every outcome is
the one its workload expects, that it reports one JSON document, and that it cleans up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from tests.support.processes import HANG_GUARD, PROJECT_ROOT

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

#: A bound on one bench run, against a hang only: the smoke run takes about 80 s on a quiet
#: 2-core machine and several times that on a loaded one, and that is no failure of its own.
BENCH_RUN_BOUND = HANG_GUARD - 60

PHASES = (
    "uniform",
    "uniform_half_load",
    "uniform_per_task",
    "uniform_per_task_half_load",
    "uniform_at_per_task_half_load",
    "hot",
    "approvals",
    "mixed",
    "direct_db",
    "naive_peer",
    "naive_peer_with_event",
    "noop_task",
    "profile",
)


@dataclass(frozen=True)
class BenchRun:
    process: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    written: dict[str, Any]
    database_prefix: str
    vhost_prefix: str


def run_bench(
    arguments: list[str], postgres_server_url: str, broker_url: str, out: Path
) -> BenchRun:
    """``python -m bench`` with ``arguments`` against the test services; its report."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GOVERNANCE_BENCH")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            *arguments,
            "--database-url",
            postgres_server_url,
            "--broker-url",
            broker_url,
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=BENCH_RUN_BOUND)
    completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert completed.returncode == 0, f"bench failed:\n{stderr[-4000:]}\n{stdout[-4000:]}"
    return BenchRun(
        completed,
        json.loads(stdout),
        json.loads(out.read_text()),
        database_prefix=f"governance_bench_{process.pid}_",
        vhost_prefix=f"governance-bench-{process.pid}-",
    )


@pytest.fixture(scope="module")
def bench_run(
    postgres_server_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> BenchRun:
    """One ``python -m bench all`` at tiny sizes, on one worker process."""
    out = Path(tmp_path_factory.mktemp("bench")) / "result.json"
    arguments = ["all", "--workers", "1", "--scale", "0.002", "--racers", "5"]
    return run_bench(arguments, postgres_server_url, broker_url, out)


def test_prints_one_json_document_and_writes_the_same_to_the_out_file(
    bench_run: BenchRun,
) -> None:
    # Given a finished run / Then stdout is the document and --out holds the same one
    assert bench_run.report == bench_run.written
    assert bench_run.report["errors"] == []


def test_reports_every_workload_and_baseline_with_settings_and_machine(
    bench_run: BenchRun,
) -> None:
    # Given a finished `all` run
    report = bench_run.report
    # Then every phase ran once, on one worker process
    half_load = {
        key: [next(iter(report["results"][key]))]
        for key in (
            "uniform_half_load",
            "uniform_per_task_half_load",
            "uniform_at_per_task_half_load",
        )
    }
    assert {key: sorted(report["results"].get(key, {})) for key in PHASES} == {
        "uniform": ["1w"],
        "uniform_per_task": ["1w"],
        **half_load,
        "hot": ["1w"],
        "approvals": ["1w"],
        "mixed": ["1w"],
        "direct_db": ["1p"],
        "naive_peer": ["1w"],
        "naive_peer_with_event": ["1w"],
        "noop_task": ["1w"],
        "profile": ["default 1w", "per-task 1w"],
    }
    # And the settings and machine it ran on are recorded, with the target ratios
    assert report["settings"]["worker_counts"] == [1]
    assert report["settings"]["scale"] == 0.002
    assert {"cpu_count", "python", "postgres", "rabbitmq", "git"} <= set(report["machine"])
    assert {
        "uniform_over_naive",
        "uniform_over_noop",
        "half_load_p50_over_direct_p50",
        "half_load_p99_over_p50",
        "hot_round_p50_over_direct_p50",
    } <= set(report["ratios"])


def test_every_outcome_is_the_one_its_workload_expects(bench_run: BenchRun) -> None:
    # Given a finished run
    results = bench_run.report["results"]
    # Then each workload's outcomes match what it was built to produce
    for key in (
        "uniform",
        "uniform_half_load",
        "uniform_per_task",
        "approvals",
        "mixed",
        "naive_peer",
        "noop_task",
        "profile",
    ):
        for label, result in results[key].items():
            correctness = result["correctness"]
            assert correctness["actual"] == correctness["expected"], (key, label)
            assert correctness["unexpected_outcomes"] == 0, (key, label)
    # And every hot round had exactly one winner, the rest losing on the revision
    assert results["hot"]["1w"]["correctness"]["all_correct"] is True
    # And the worker left nothing in the outbox unpublished, in either mode
    assert results["uniform"]["1w"]["outbox"]["unpublished"] == 0
    assert results["uniform_per_task"]["1w"]["outbox"]["unpublished"] == 0


def test_profiles_the_worker_processes_of_each_mode(bench_run: BenchRun) -> None:
    # Given a finished run / Then py-spy sampled the first worker's main process and child
    for label, result in bench_run.report["results"]["profile"].items():
        profiles = result["profile"]
        assert [p["process"] for p in profiles] == ["worker main", "pool child"], label
        # (py-spy ran and wrote its stacks: without them there is an error instead)
        assert all("error" not in p for p in profiles), profiles
        assert all({"samples", "waiting_share", "self"} <= set(p) for p in profiles), profiles


def test_leaves_no_database_vhost_or_worker_process_behind(
    bench_run: BenchRun, postgres_server_url: str
) -> None:
    # Given a finished run
    # Then its database is dropped
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (bench_run.database_prefix + "%",),
        ).fetchall()
    assert left == []
    # And its vhost is deleted
    if shutil.which("rabbitmqctl"):
        vhosts = subprocess.run(
            ["rabbitmqctl", "list_vhosts", "-q"], capture_output=True, text=True, timeout=60
        ).stdout.split()
        assert not [v for v in vhosts if v.startswith(bench_run.vhost_prefix)]
    # And no worker process it started is still running
    assert _processes_with_database(bench_run.database_prefix) == []


def _processes_with_database(prefix: str) -> list[int]:
    found = []
    for process in psutil.process_iter():
        try:
            if prefix in process.environ().get("GOVERNANCE_DATABASE_URL", ""):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def test_network_runs_every_mode_and_baseline_behind_the_delay_proxies(
    bench_run: BenchRun,
) -> None:
    # Given a finished `all` run, which measures the 2 ms emulated round trip too
    report = bench_run.report
    phases = report["results"]["network"]
    # Then the default and per-task modes, the naive peer and the no-op task each ran there
    assert sorted(phases) == [
        "default 1w 2ms",
        "naive peer 1w 2ms",
        "noop 1w 2ms",
        "per-task 1w 2ms",
    ]
    for label, result in phases.items():
        assert result["emulated_round_trip_ms"] == 2.0, label
        correctness = result["correctness"]
        assert correctness["actual"] == correctness["expected"], label
        # And the proxies' own CPU is measured, apart from everything else
        assert "delay_proxies" in result["cpu_seconds"], label
    assert report["errors"] == []
    assert "network_2ms_default_over_naive" in report["ratios"]


def test_renders_the_targets_of_an_all_run_as_the_readme_table(
    bench_run: BenchRun, tmp_path: Path
) -> None:
    # Given a finished `all` run's report / When `python -m bench.table` renders it
    from bench.table import ROWS

    report = tmp_path / "report.json"
    report.write_text(json.dumps(bench_run.report))
    rendered = subprocess.run(
        [sys.executable, "-m", "bench.table", str(report)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = rendered.stdout.splitlines()
    # Then there is a header, a rule and one row per target, each with a measured figure
    assert len(lines) == 2 + len(ROWS)
    assert all(row.split("|")[2].strip() != "n/a" for row in lines[2:]), lines


def test_policy_compares_submits_in_requester_mode_and_under_a_large_policy(
    postgres_server_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given the policy workload at a tiny size
    arguments = ["policy", "--workers", "1", "--scale", "0.002"]
    report = run_bench(arguments, postgres_server_url, broker_url, tmp_path / "out.json").report

    # Then each mode ran twice, every submit applied as its workload expects
    phases = report["results"]["policy"]
    assert sorted(phases) == sorted(
        ["required 1w #1", "required 1w #2", "requester 1w #1", "requester 1w #2"]
    )
    for label, result in phases.items():
        correctness = result["correctness"]
        assert correctness["actual"] == correctness["expected"], label
    # And the cost of the policy is a ratio with its target
    assert report["errors"] == []
    assert report["targets"]["policy_required_throughput_cost"]["value"] is not None
