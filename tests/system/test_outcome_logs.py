"""One log line per command outcome, structured when asked, with nothing secret in the log."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.processes import WorkerProcess
from tests.system.test_metrics import send

OUTCOME_FIELDS = {
    "command_id",
    "request_id",
    "type",
    "outcome",
    "code",
    "revision",
    "duration_ms",
    "batch_size",
}
DATABASE_PASSWORD = "not-for-logs-7f3a"


def with_password(database_url: str) -> str:
    """The same database, with a password in the URL (trust authentication ignores it)."""
    parts = urlsplit(database_url)
    netloc = f"{parts.username or 'postgres'}:{DATABASE_PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def workload() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    submits = [sign(submit(new_id(), actor="logged")) for _ in range(3)]
    later = [
        sign(command("cancel", submits[0]["request_id"], 9, actor="logged")),
        {"command_id": new_id("cmd"), "type": "not_a_type", "request_id": new_id()},
    ]
    return submits, later


def run_worker(
    database_url: str,
    broker_url: str,
    events: EventListener,
    log_path: Path,
    env: dict[str, str],
    *args: str,
) -> list[dict[str, Any]]:
    """Run a worker through the workload; the commands it was sent."""
    worker = WorkerProcess(
        with_password(database_url),
        broker_url,
        concurrency=1,
        log_path=log_path,
        extra_env=env,
        extra_args=args,
    )
    try:
        if "WARNING" not in args:  # "ready." is logged at INFO; otherwise the events tell
            worker.wait_ready()
        submits, later = workload()
        send(broker_url, submits)
        events.wait_for([p["command_id"] for p in submits], timeout=60)
        send(broker_url, later)
        events.wait_for([p["command_id"] for p in later], timeout=60)
    finally:
        worker.stop()
    return submits + later


def test_every_outcome_has_one_json_line_with_its_fields(
    database_url: str, broker_url: str, events: EventListener, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    sent = run_worker(database_url, broker_url, events, log_path, {"GOVERNANCE_LOG_FORMAT": "json"})
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    outcomes = {r["command_id"]: r for r in records if r.get("logger") == "governance.outcomes"}

    assert set(outcomes) == {p["command_id"] for p in sent}
    assert all(set(r) >= OUTCOME_FIELDS and r["level"] == "INFO" for r in outcomes.values())
    first = outcomes[sent[0]["command_id"]]
    assert (first["type"], first["outcome"], first["code"], first["revision"]) == (
        "submit",
        "applied",
        "",
        1,
    )
    assert first["request_id"] == sent[0]["request_id"] and first["batch_size"] == 1
    conflict, invalid = (outcomes[p["command_id"]] for p in sent[-2:])
    assert (conflict["type"], conflict["outcome"], conflict["code"]) == (
        "cancel",
        "rejected",
        "concurrency_conflict",
    )
    assert (invalid["type"], invalid["code"]) == ("invalid", "invalid_command")
    assert all(isinstance(r["duration_ms"], float | int) for r in outcomes.values())


def test_nothing_secret_reaches_the_log(
    database_url: str, broker_url: str, events: EventListener, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    sent = run_worker(
        database_url,
        broker_url,
        events,
        log_path,
        {"GOVERNANCE_LOG_FORMAT": "json"},
        "--loglevel",
        "DEBUG",
    )
    text = log_path.read_text()
    broker_password = urlsplit(broker_url).password or ""
    assert DATABASE_PASSWORD not in text
    assert not re.search(rf"://[^\s/]*:{re.escape(broker_password)}@", text)
    signatures = [p["auth"]["signature"] for p in sent if "auth" in p]
    assert signatures and not [s for s in signatures if s in text]


def test_outcome_lines_appear_at_the_default_log_level_in_text(
    database_url: str, broker_url: str, events: EventListener, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    sent = run_worker(database_url, broker_url, events, log_path, {}, "--loglevel", "WARNING")
    text = log_path.read_text()
    for payload in sent:
        (line,) = [line for line in text.splitlines() if f"command {payload['command_id']}" in line]
        assert f"request={payload['request_id']}" in line and "duration_ms=" in line
