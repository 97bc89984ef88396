"""``governance`` given an instant no command may name, or a NUL character where the database
refuses one: exit 2 with one line per culprit naming it, never a traceback, nothing sent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import run_governance

pytestmark = pytest.mark.system

EXIT_USAGE = 2
RANGE = "expected a timestamp between 0001-01-02 and 9999-12-30 UTC"
BEFORE_YEAR_1 = "0001-01-01T00:00:00+14:00"
AFTER_YEAR_9999 = "9999-12-31T23:00:00-14:00"


@pytest.fixture
def governance(database_url: str, broker_url: str) -> Any:
    """Run ``governance ARGS...`` as a process; returns the completed process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_governance(database_url, broker_url, *args)

    return run


def refused(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines on stderr of a run that must have been refused as invalid (exit 2)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_USAGE, (result.returncode, result.stderr)
    assert result.stdout == ""
    return result.stderr.strip().splitlines()


def submit_args(*extra: str) -> list[str]:
    return [
        "submit",
        "req-cli-validation",
        "--state-id",
        "cfg-9",
        "--state-type",
        "config",
        "--mutation-type",
        "update",
        "--operation",
        "raise-limit",
        "--pending-reason",
        "quota",
        *extra,
    ]


@pytest.mark.parametrize("stamp", [AFTER_YEAR_9999, BEFORE_YEAR_1])
def test_move_to_pending_with_an_expiry_out_of_range_exits_2_with_one_line(
    governance: Any, stamp: str
) -> None:
    result = governance(
        "move-to-pending",
        "req-cli-validation",
        "--expected-revision",
        "1",
        "--actor",
        "a",
        "--pending-reason",
        "approval",
        "--expires-at",
        stamp,
    )

    (line,) = refused(result)
    assert line == f'Error: invalid command: --expires-at: {RANGE}, got "{stamp}"'


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(("--expires-at", AFTER_YEAR_9999), id="expires-at-after-year-9999"),
        pytest.param(("--expires-at", "9999-12-31T23:59:59"), id="expires-at-naive-at-the-end"),
        pytest.param(("--expires-in", "99999999999d"), id="expires-in-past-year-9999"),
        pytest.param(("--expires-in", "2930000d"), id="expires-in-just-past-the-range"),
        pytest.param(("--expires-in", "inf"), id="expires-in-infinite"),
        pytest.param(("--expires-in", "nan"), id="expires-in-not-a-number"),
    ],
)
def test_submit_with_a_deadline_out_of_range_exits_2_with_one_line(
    governance: Any, extra: tuple[str, str]
) -> None:
    result = governance(*submit_args(*extra))

    (line,) = refused(result)
    assert line.startswith(f"Error: invalid command: {extra[0]}: expected ")


def command_line(**fields: Any) -> str:
    body: dict[str, Any] = {
        "command_id": "cmd-cli-validation",
        "type": "approve",
        "request_id": "req-cli-validation",
        "expected_revision": 1,
        "actor": {"id": "a"},
    }
    body.update(fields)
    return json.dumps(body)


def test_send_with_instants_out_of_range_and_nul_characters_exits_2_naming_each_culprit(
    governance: Any, tmp_path: Path
) -> None:
    # Given a file of commands, each invalid in one of the ways the database would refuse
    lines = [
        command_line(issued_at=AFTER_YEAR_9999),
        command_line(
            type="move_to_pending",
            args={"pending_reason": "approval", "expires_at": BEFORE_YEAR_1},
        ),
        command_line(metadata={"a": {"b\x00": 1}}),
        command_line(metadata={"a": ["x\x00y"]}),
    ]
    commands = tmp_path / "commands.jsonl"
    commands.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # When they are sent
    result = governance("send", str(commands))

    # Then nothing is sent: one line per culprit, naming its field, and a summary
    assert refused(result) == [
        f'line 1: issued_at: {RANGE}, got "{AFTER_YEAR_9999}"',
        f'line 2: args.expires_at: {RANGE}, got "{BEFORE_YEAR_1}"',
        'line 3: metadata.a: expected keys without NUL characters, got "b\\u0000"',
        "line 4: metadata.a[0]: expected no NUL characters",
        "Error: 4 invalid line(s); nothing sent",
    ]


def test_wait_until_a_misspelt_status_exits_2_echoing_it(governance: Any) -> None:
    result = governance("wait", "req-any", "--until", "aproved,rejected")

    (line,) = refused(result)
    assert "aproved is not a status: expected statuses from" in line
    assert "--until" in line
