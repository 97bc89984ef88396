"""The suite's process helpers run the same whatever the contributor's shell exports: a
worker and the CLI started with foreign ``GOVERNANCE_*`` and ``OTEL_*`` values in the
environment still use the test's services, the signed mode and plain-text logs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.commands import new_id
from tests.support.environment import child_environment, is_service_setting
from tests.support.processes import WorkerProcess, run_governance

pytestmark = pytest.mark.system

#: What someone who followed the deployment steps on a development box may have exported.
FOREIGN = {
    "GOVERNANCE_BROKER_URL": "amqp://someone:else@127.0.0.1:1/elsewhere",
    "GOVERNANCE_DATABASE_URL": "postgresql://someone@127.0.0.1:1/elsewhere",
    "GOVERNANCE_AUTH": "off",
    "GOVERNANCE_LOG_FORMAT": "json",
    "GOVERNANCE_BATCH_SIZE": "1",
    "OTEL_TRACES_EXPORTER": "otlp",
}


@pytest.fixture
def foreign_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FOREIGN.items():
        monkeypatch.setenv(name, value)


def test_a_child_gets_none_of_the_shells_service_settings(foreign_shell: None) -> None:
    env = child_environment({"GOVERNANCE_AUTH": "signed"})

    assert [name for name in env if is_service_setting(name)] == ["GOVERNANCE_AUTH"]
    assert env["GOVERNANCE_AUTH"] == "signed"


def test_the_suites_controls_are_not_service_settings() -> None:
    assert not is_service_setting("GOVERNANCE_TEST_DATABASE_URL")
    assert not is_service_setting("GOVERNANCE_REQUIRE_SERVICES")
    assert is_service_setting("GOVERNANCE_AUTH") and is_service_setting("OTEL_SERVICE_NAME")


def test_a_worker_and_the_cli_use_the_tests_services_and_modes_under_a_foreign_shell(
    foreign_shell: None, database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a worker started by the suite's helper while the shell points elsewhere
    worker = WorkerProcess(
        database_url, broker_url, concurrency=1, log_path=tmp_path / "worker.log"
    )
    try:
        worker.wait_ready(timeout=60)
        # When the CLI, started by the suite's helper too, submits and waits
        request_id = new_id("hermetic")
        done = run_governance(
            database_url,
            broker_url,
            "submit",
            request_id,
            "--state-id",
            "cfg-1",
            "--state-type",
            "config",
            "--mutation-type",
            "update",
            "--operation",
            "raise-limit",
            "--wait",
            "--json",
            actor="hermetic",
        )
    finally:
        worker.stop()

    # Then the command was applied on the test's services, signed and verified
    assert done.returncode == 0, done.stderr[-2000:]
    event = json.loads(done.stdout)
    assert (event["event_type"], event["request_id"]) == ("transition.applied", request_id)
    assert event["authenticated"] is True
    # And the worker logged in the default text format, not the shell's JSON
    log = (tmp_path / "worker.log").read_text()
    assert f"command {event['command_id']} applied" in log
    assert not [line for line in log.splitlines() if line.startswith("{")]


def test_the_suites_own_process_runs_without_the_shells_service_settings() -> None:
    # (the settings the shell exported were dropped before any module of the service read
    # its settings, so an in-process client or worker reads the defaults too)
    assert [name for name in os.environ if is_service_setting(name)] == []
