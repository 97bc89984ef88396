"""The README's command-line walk-through and its Python example run as written, in the order
the README shows them, against the real PostgreSQL, RabbitMQ and a real worker in the mode
the README documents (signed commands).

The blocks that run are the ones marked ``<!-- readme:walk-through -->`` and
``<!-- readme:python-api -->``. A line whose comment says ``exit N`` must exit with exactly
N; every other line must succeed. The URLs the README leaves to the environment
(``GOVERNANCE_DATABASE_URL``, ``GOVERNANCE_BROKER_URL``) are the test services'.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import purge_queues
from tests.deployment.test_readme import BIN, commented_lines, marked_block, marked_blocks
from tests.support.identities import register_worker
from tests.support.processes import WorkerProcess
from tests.support.services import fresh_database
from worker.migrate import migrate

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

STEP_TIMEOUT = 120
IDENTITY_VARIABLES = ("GOVERNANCE_ACTOR", "GOVERNANCE_SIGNING_KEY", "GOVERNANCE_AUDIENCE")


@dataclass(frozen=True)
class Step:
    """One line of the walk-through and the exit code the README gives it."""

    line: str
    exit_code: int


def walk_through() -> list[Step]:
    """The walk-through's lines in README order, each with its expected exit code."""
    steps = []
    for block in marked_blocks("walk-through"):
        for line, comment in commented_lines(block):
            said = re.search(r"\bexit (\d+)\b", comment)
            steps.append(Step(line, int(said.group(1)) if said else 0))
    return steps


@dataclass
class Shell:
    """A shell session in one directory: each line runs in ``sh``, and an ``export`` carries
    over to the lines after it, as it would typed at a prompt."""

    cwd: Path
    env: dict[str, str]

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        if line.startswith("export "):
            for assignment in shlex.split(line)[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
        return subprocess.run(
            ["sh", "-c", line],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )


@dataclass(frozen=True)
class Walked:
    """The walk-through as it ran: every step's outcome, up to the first that went wrong."""

    shell: Shell
    outcomes: list[tuple[Step, subprocess.CompletedProcess[str]]]

    @property
    def failure(self) -> str | None:
        step, done = self.outcomes[-1]
        if done.returncode == step.exit_code:
            return None
        return (
            f"{step.line!r} exited {done.returncode}, the README says {step.exit_code}\n"
            f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
        )


@pytest.fixture(scope="module")
def readme_database(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of its own, with no approval policy and only the worker
    registered (as the deployment's provisioning step registers it): the walk-through
    registers its actors and applies its policy itself."""
    with fresh_database(postgres_server_url) as url:
        migrate(url)
        register_worker(url)
        yield url


@pytest.fixture(scope="module")
def walked(
    readme_database: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Walked]:
    """The walk-through run line by line in a fresh directory, with a worker applying its
    commands; stops at the first line that does not exit as the README says."""
    purge_queues(broker_url)
    workdir = tmp_path_factory.mktemp("readme")
    # Who acts is the walk-through's to say; the deployment's settings are the worker's too.
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARIABLES}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        GOVERNANCE_DATABASE_URL=readme_database,
        GOVERNANCE_BROKER_URL=broker_url,
    )
    worker = WorkerProcess(
        readme_database,
        broker_url,
        concurrency=1,
        log_path=workdir / "worker.log",
        extra_env={"GOVERNANCE_AUTH": "signed"},
    )
    try:
        worker.wait_ready()
        shell = Shell(workdir, env)
        outcomes = []
        for step in walk_through():
            outcomes.append((step, shell.run(step.line)))
            if outcomes[-1][1].returncode != step.exit_code:
                break
        yield Walked(shell, outcomes)
    finally:
        worker.stop()
        purge_queues(broker_url)


def test_every_line_of_the_cli_walk_through_exits_as_the_readme_says(walked: Walked) -> None:
    assert walked.failure is None, walked.failure
    assert [step for step, _ in walked.outcomes] == walk_through()


def test_the_walk_through_shows_a_lost_race_and_a_final_request_with_their_exit_codes() -> None:
    # The README's own promise: the walk-through exercises the exit codes it documents
    assert {step.exit_code for step in walk_through()} >= {0, 3, 4}


def test_the_python_example_runs_twice_in_a_row(walked: Walked) -> None:
    # Given the walk-through's actors and key files
    assert walked.failure is None, walked.failure
    example = walked.shell.cwd / "example.py"
    example.write_text(marked_block("python-api"))

    # When the README's Python example runs twice in a row
    runs = [walked.shell.run(f"{shlex.quote(sys.executable)} example.py") for _ in range(2)]

    # Then both succeed, and the second is told the request exists and the approval is given
    for done in runs:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "already_exists" in runs[1].stdout
    assert "approval_not_allowed" in runs[1].stdout
