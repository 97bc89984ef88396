"""``python -m bench console``: from the click to the applied outcome on the page.

Starts a fresh database, a private vhost, one governance worker accepting the console's
origin, and ``governance console`` as its own process; enrolls one approver's passkey in
Debian's Chromium (headless, a CDP virtual authenticator) and signs in. Then, for each of
``--approvals`` pending requests (submitted before timing), opens the request page, clicks
Approve (the page shows the command) and times from the click on "Sign with passkey and
send" to the page saying ``applied``: the passkey's assertion, the relay, the worker's
guarded transaction and the outcome back by server-sent events. Also reports the console
process's CPU per approval and its memory per signed-in session. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.identities import Identities
from bench.services import (
    DEFAULT_BROKER_URL,
    DEFAULT_SERVER_URL,
    PROJECT_ROOT,
    WorkerProcess,
    fresh_database,
    machine_info,
    private_vhost,
)
from bench.stats import latency_summary
from governance.authentication import SIGNED
from worker import enrollment, registry
from worker.transaction import apply_commands

APPROVER = "bench-approver"
REQUESTER = "bench-requester"
PATIENCE_MS = 60_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _submit(request_id: str) -> dict[str, Any]:
    return {
        "command_id": f"{request_id}-submit",
        "type": "submit",
        "request_id": request_id,
        "actor": {"id": REQUESTER},
        "args": {
            "state_id": f"state-{request_id}",
            "state_type": "config",
            "mutation_type": "update",
            "intent": {"operation_name": "update-config", "risk_level": "medium"},
            "approval_requirements": [{"approval_id": "ap-1", "approver_id": APPROVER}],
        },
    }


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the console exited at start")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"the console did not answer at {url}")


def run(approvals: int, sessions: int, server_url: str, broker_url: str) -> dict[str, Any]:
    """Set everything up, measure, tear everything down; the figures."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: apt-get install -y chromium")
    port = _free_port()
    origin = f"http://localhost:{port}"
    with (
        fresh_database(server_url) as database_url,
        private_vhost(broker_url) as (vhost, _),
        tempfile.TemporaryDirectory(prefix="bench-console-") as scratch,
    ):
        identities = Identities(database_url)
        key_file = identities.worker_key_file(Path(scratch))
        env = {
            "GOVERNANCE_DATABASE_URL": database_url,
            "GOVERNANCE_BROKER_URL": vhost,
            "GOVERNANCE_WORKER_KEY": str(key_file),
            "GOVERNANCE_AUTH": "signed",
            "GOVERNANCE_WEBAUTHN_ORIGINS": origin,
            "GOVERNANCE_CONSOLE_ORIGIN": origin,
            "GOVERNANCE_CONSOLE_BIND": f"127.0.0.1:{port}",
        }
        worker = WorkerProcess(
            "worker", env, concurrency=2, name="bench-console", log_dir=Path(scratch)
        )
        console = subprocess.Popen(
            [sys.executable, "-m", "governance_cli.main", "console"],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                registry.add_actor(conn, APPROVER, "Bench approver", "user", ["approver"], [])
                link = enrollment.issue_link(conn, APPROVER)
                request_ids = [f"req-console-{n:04d}" for n in range(approvals)]
                applied = apply_commands(
                    conn, identities.sign_all(_submit(r) for r in request_ids), SIGNED
                )
                assert all(getattr(result, "applied", False) for result in applied)
            _wait_for_http(f"{origin}/signin", console)
            measured = _drive(chromium, origin, link.token, request_ids, sessions, console.pid)
        finally:
            console.terminate()
            console.wait(30)
            worker.signal(15)
            worker.wait_or_kill(30)
    return measured


def _drive(
    chromium: str,
    origin: str,
    token: str,
    request_ids: list[str],
    sessions: int,
    console_pid: int,
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    process = psutil.Process(console_pid)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = browser.new_context()
        context.set_default_timeout(PATIENCE_MS)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        page.goto(f"{origin}/enroll/{token}")
        page.get_by_role("button", name="Create passkey").click()
        page.get_by_role("status").filter(has_text="Passkey enrolled").wait_for()

        def sign_in() -> None:
            page.goto(f"{origin}/signin")
            page.get_by_role("button", name="Sign in with passkey").click()
            page.wait_for_url(f"{origin}/")

        sign_in()
        cpu_before = sum(process.cpu_times()[:2])
        seconds = []
        for request_id in request_ids:
            page.goto(f"{origin}/requests/{request_id}")
            page.get_by_role("button", name="Approve", exact=True).click()
            started = time.perf_counter()
            page.get_by_role("button", name="Sign with passkey and send").click()
            page.locator("#outcome").filter(has_text="applied").wait_for()
            seconds.append(time.perf_counter() - started)
        cpu_approvals = sum(process.cpu_times()[:2]) - cpu_before
        rss_before = process.memory_info().rss
        for _ in range(sessions):
            sign_in()
        rss_after = process.memory_info().rss
        browser.close()
    return {
        "click_to_applied": latency_summary(seconds),
        "console_cpu_ms_per_approval": round(1000 * cpu_approvals / len(request_ids), 2),
        "console_rss_mib": round(rss_after / 2**20, 1),
        # A session is a few hundred bytes in the console's memory: RSS moves by pages, so
        # the growth over all the extra sessions is what is reported, and its share of each.
        "console_rss_growth_kib_over_sessions": round((rss_after - rss_before) / 1024, 1),
        "console_rss_kib_per_session": round((rss_after - rss_before) / 1024 / sessions, 2),
        "sessions_opened": sessions + 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench console", description=__doc__)
    parser.add_argument("--approvals", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=50, help="extra sign-ins, for memory")
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL)
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    measured = run(args.approvals, args.sessions, args.server_url, args.broker_url)
    report = {
        "command": "python -m bench console " + " ".join(argv or []),
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine_info(args.server_url, args.broker_url),
        "settings": {"approvals": args.approvals, "worker_concurrency": 2},
        "results": measured,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
