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
MAX_BATCH = 100


def outcome_records(log_path: Path) -> dict[str, dict[str, Any]]:
    """The worker's JSON outcome lines by command id, in the order they were logged."""
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    return {r["command_id"]: r for r in records if r.get("logger") == "governance.outcomes"}


def with_password(database_url: str) -> str:
    """The same database, with a password in the URL (trust authentication ignores it)."""
    parts = urlsplit(database_url)
    netloc = f"{parts.username or 'postgres'}:{DATABASE_PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def workload() -> list[list[dict[str, Any]]]:
    """The commands of a run, in rounds: each round is sent at once and awaited before the
    next. The first round is one submit alone, so it is applied in a batch of one."""
    submits = [sign(submit(new_id(), actor="logged")) for _ in range(3)]
    later = [
        sign(command("cancel", submits[0]["request_id"], 9, actor="logged")),
        {"command_id": new_id("cmd"), "type": "not_a_type", "request_id": new_id()},
    ]
    return [submits[:1], submits[1:], later]


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
        rounds = workload()
        for commands in rounds:
            send(broker_url, commands)
            events.wait_for([p["command_id"] for p in commands], timeout=60)
    finally:
        worker.stop()
    return [payload for commands in rounds for payload in commands]


def batches(outcomes: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The outcome lines, in log order, cut into the runs they came from: a run logs its
    commands' lines one after another, each with the run's size and duration."""
    runs: list[list[dict[str, Any]]] = []
    index = 0
    while index < len(outcomes):
        size = outcomes[index]["batch_size"]
        assert isinstance(size, int) and size >= 1, outcomes[index]
        runs.append(outcomes[index : index + size])
        index += size
    return runs


def test_every_outcome_has_one_json_line_with_its_fields(
    database_url: str, broker_url: str, events: EventListener, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    sent = run_worker(
        database_url,
        broker_url,
        events,
        log_path,
        {"GOVERNANCE_LOG_FORMAT": "json", "GOVERNANCE_BATCH_SIZE": str(MAX_BATCH)},
    )
    outcomes = outcome_records(log_path)

    assert sorted(outcomes) == sorted(p["command_id"] for p in sent)
    assert all(set(r) >= OUTCOME_FIELDS and r["level"] == "INFO" for r in outcomes.values())
    first = outcomes[sent[0]["command_id"]]
    assert (first["type"], first["outcome"], first["code"], first["revision"]) == (
        "submit",
        "applied",
        "",
        1,
    )
    assert first["request_id"] == sent[0]["request_id"]
    conflict, invalid = (outcomes[p["command_id"]] for p in sent[-2:])
    assert (conflict["type"], conflict["outcome"], conflict["code"]) == (
        "cancel",
        "rejected",
        "concurrency_conflict",
    )
    assert (invalid["type"], invalid["code"]) == ("invalid", "invalid_command")
    assert all(isinstance(r["duration_ms"], float | int) for r in outcomes.values())


def test_every_outcome_line_carries_the_size_of_the_batch_it_was_applied_in(
    database_url: str, broker_url: str, events: EventListener, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    sent = run_worker(
        database_url,
        broker_url,
        events,
        log_path,
        {"GOVERNANCE_LOG_FORMAT": "json", "GOVERNANCE_BATCH_SIZE": str(MAX_BATCH)},
    )
    runs = batches(list(outcome_records(log_path).values()))

    # A batch's lines agree on its size and its duration, and no batch exceeds the maximum
    assert sum(len(run) for run in runs) == len(sent)
    for run in runs:
        assert len(run) == run[0]["batch_size"] <= MAX_BATCH, run
        assert len({(r["batch_size"], r["duration_ms"]) for r in run}) == 1, run
    # The command sent alone, and answered before anything else was sent, ran alone
    assert runs[0] == [outcome_records(log_path)[sent[0]["command_id"]]]


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
