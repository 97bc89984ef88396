"""``python -m bench.verify``: how fast ``governance verify --all`` re-executes a history.

Seeds a fresh database through the worker's own guarded transaction (every command signed):
``--requests`` requests, each submitted with three named approvers, granted by all three and
marked executed (five commands, nine decisions). Then measures, over the same data in the
same run: reading every history (the floor), the form checks alone (chain and signatures:
what verify did before it re-executed), form and re-execution in process, and the CLI's
``governance verify --all`` end to end, in one process and in one per core. Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.identities import Identities
from bench.services import DEFAULT_BROKER_URL, DEFAULT_SERVER_URL, fresh_database, machine_info
from governance.authentication import SIGNED
from producer.audit import read_all_histories, reexecution_from_database
from worker.transaction import StoredOutcome, apply_commands

APPROVERS = ("approver-1", "approver-2", "approver-3")
BATCH = 500


def _submit(request_id: str) -> dict[str, Any]:
    return {
        "command_id": f"{request_id}-submit",
        "type": "submit",
        "request_id": request_id,
        "actor": {"id": "requester"},
        "args": {
            "state_id": f"state-{request_id}",
            "state_type": "config",
            "mutation_type": "update",
            "intent": {"operation_name": "update-config", "risk_level": "medium"},
            "initial_status": "pending",
            "approval_requirements": [
                {"approval_id": f"a{n}", "approver_id": approver}
                for n, approver in enumerate(APPROVERS, start=1)
            ],
        },
    }


def _transition(
    request_id: str, type_: str, revision: int, actor: str, **args: Any
) -> dict[str, Any]:
    return {
        "command_id": f"{request_id}-{revision}",
        "type": type_,
        "request_id": request_id,
        "expected_revision": revision,
        "actor": {"id": actor},
        "args": args,
    }


def _grant(n: int, approver: str) -> Callable[[str], dict[str, Any]]:
    def grant(request_id: str) -> dict[str, Any]:
        return _transition(request_id, "approve_requirement", n, approver, approval_id=f"a{n}")

    return grant


def _execute(request_id: str) -> dict[str, Any]:
    return _transition(request_id, "mark_executed", 4, "operator")


def phases() -> list[Callable[[str], dict[str, Any]]]:
    """The five commands of every request, phase by phase (a phase's commands go in any
    order: each is on its own request)."""
    grants = [_grant(n, approver) for n, approver in enumerate(APPROVERS, start=1)]
    return [_submit, *grants, _execute]


def seed(database_url: str, requests: int) -> dict[str, Any]:
    """Apply every request's commands through the guarded transaction; how long it took."""
    identities = Identities(database_url)
    request_ids = [f"req-{n:07d}" for n in range(requests)]
    started = time.perf_counter()
    signing = 0.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for step in phases():
            for start in range(0, len(request_ids), BATCH):
                mark = time.perf_counter()
                payloads = identities.sign_all(
                    step(rid) for rid in request_ids[start : start + BATCH]
                )
                signing += time.perf_counter() - mark
                results = apply_commands(conn, payloads, SIGNED)
                refused = [r for r in results if not (isinstance(r, StoredOutcome) and r.applied)]
                if refused:
                    raise RuntimeError(f"a seeding command was refused: {refused[0]}")
        decisions = conn.execute("SELECT count(*) FROM request_decisions").fetchone()
        conn.execute("VACUUM ANALYZE")
    return {
        "requests": requests,
        "decisions": int(decisions[0]) if decisions else 0,
        "seconds": round(time.perf_counter() - started, 1),
        "signing_seconds": round(signing, 1),
    }


def _in_process(database_url: str, mode: str) -> dict[str, Any]:
    started = time.perf_counter()
    decisions = failures = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        reexecution = reexecution_from_database(conn) if mode == "reexecute" else None
        for history in read_all_histories(conn):
            decisions += len(history.decisions)
            if mode == "read":
                continue
            findings = history.verify(reexecution=reexecution)
            failures += len(findings.failures)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "decisions": decisions,
        "decisions_per_second": round(decisions / seconds),
        "failures": failures,
    }


def _cli(database_url: str, jobs: int = 1) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "governance_cli.main",
            "verify",
            "--all",
            "--jobs",
            str(jobs),
            "--json",
        ],
        env={**os.environ, "GOVERNANCE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    decisions = int(report.get("decisions", 0))
    return {
        "exit_code": done.returncode,
        "seconds": round(seconds, 2),
        "decisions": decisions,
        "decisions_per_second": round(decisions / seconds) if seconds else None,
        "failures": report.get("failures"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL)
    args = parser.parse_args(argv)
    with fresh_database(args.server_url) as url:
        seeded = seed(url, args.requests)
        report = {
            "benchmark": "verify",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(url, DEFAULT_BROKER_URL),
            "seeded": seeded,
            "read_only": _in_process(url, "read"),
            "form_only": _in_process(url, "form"),
            "reexecute": _in_process(url, "reexecute"),
            "cli_verify_all": _cli(url),
            f"cli_verify_all_jobs_{os.cpu_count()}": _cli(url, os.cpu_count() or 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
