"""``governance demo``: the tour runs with nothing but the package, and on real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from typing import Any

import pytest

from tests.support.processes import PROJECT_ROOT

DEMO = [sys.executable, "-m", "governance_cli.main", "demo", "--json"]


def run_demo(*extra: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOVERNANCE_")}
    done = subprocess.run(
        [*DEMO, *extra],
        cwd=PROJECT_ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    return done.returncode, lines


def check_tour(lines: list[dict[str, Any]]) -> None:
    events = [line["event"] for line in lines if "event" in line]
    summary = next(line["summary"] for line in lines if "summary" in line)
    assert summary["problems"] == []

    # The race on one snapshot: exactly one of the two commands applied, the other told why.
    race_outcomes = sorted(
        "applied" if e["event_type"] == "transition.applied" else e["rejection"]["code"]
        for e in events
        if e["request_id"].endswith("-race") and e["command_type"] in ("approve", "cancel")
    )
    assert race_outcomes == ["applied", "concurrency_conflict"]

    # Every request's final revision equals the applied events it had, counted from the
    # events themselves rather than from the summary.
    applied: Counter[str] = Counter()
    last_revision: dict[str, int] = defaultdict(int)
    for event in events:
        if event["event_type"] == "transition.applied":
            applied[event["request_id"]] += 1
            last_revision[event["request_id"]] = max(
                last_revision[event["request_id"]], event["revision"]
            )
    assert applied, "the tour applied nothing"
    assert dict(last_revision) == dict(applied)
    for request_id, final in summary["requests"].items():
        assert final["revision"] == applied[request_id], request_id

    statuses = {rid.rsplit("-", 1)[-1]: f["status"] for rid, f in summary["requests"].items()}
    assert statuses["expiring"] == "expired"
    assert statuses["step"] == "approved"  # the two-step approval
    assert statuses["reject"] == "rejected"
    assert statuses["require"] == "pending"
    assert statuses["revalidate"] == "approved"


@pytest.mark.system
def test_demo_runs_with_no_services_and_every_guarantee_holds() -> None:
    # Given no service URLs at all
    # When the demo runs on its embedded PostgreSQL and in-memory broker
    code, lines = run_demo()
    # Then it exits 0 and its events show the guarantees
    assert code == 0
    check_tour(lines)


@pytest.mark.system
def test_demo_runs_the_same_tour_on_real_services(database_url: str, broker_url: str) -> None:
    # Given a real PostgreSQL database and RabbitMQ
    # When the demo is pointed at them
    code, lines = run_demo("--database-url", database_url, "--broker-url", broker_url)
    # Then the same tour passes there
    assert code == 0
    check_tour(lines)
