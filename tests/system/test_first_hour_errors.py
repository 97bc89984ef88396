"""The first hour with ``governance``: every mistake a newcomer makes is one line on stderr
naming the setting or file at fault and what to do, with a documented exit code, never a
traceback; ``--dry-run``, ``--version`` and shell completion work without any service."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.commands import new_id
from tests.support.ports import reserve_port
from tests.support.processes import PROJECT_ROOT, run_governance, service_env
from tests.support.services import fresh_database

pytestmark = pytest.mark.system

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 7
PASSWORD = "s3cret-pw"


def one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The single line on stderr of a run that must have failed with ``exit_code``."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def nothing_listens() -> str:
    """An AMQP URL, with a password, of a port nothing listens on."""
    return f"amqp://guest:{PASSWORD}@127.0.0.1:{reserve_port()}//"


def no_database() -> str:
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{reserve_port()}/governance"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def submit_args(*extra: str) -> list[str]:
    return [
        "submit",
        new_id(),
        "--state-id",
        "cfg-1",
        "--state-type",
        "config",
        "--mutation-type",
        "update",
        "--operation",
        "raise-limit",
        *extra,
    ]


def test_migrate_with_the_database_unreachable_names_the_variable_and_exits_7(
    broker_url: str,
) -> None:
    result = run_governance(no_database(), broker_url, "migrate")

    line = one_line_error(result, EXIT_UNAVAILABLE)
    assert "cannot reach the database at postgresql://postgres:***@127.0.0.1:" in line
    assert "(GOVERNANCE_DATABASE_URL)" in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(submit_args(), id="submit"),
        pytest.param(["approve", "req-x", "--expected-revision", "1"], id="approve"),
        pytest.param(["cancel", "req-x", "--expected-revision", "1", "--wait"], id="cancel-wait"),
    ],
)
def test_a_sending_subcommand_refused_by_the_broker_says_to_check_the_login(
    database_url: str, broker_url: str, args: list[str]
) -> None:
    result = run_governance(database_url, with_password(broker_url, PASSWORD), *args)

    line = one_line_error(result, EXIT_UNAVAILABLE)
    assert "refused the login (ACCESS_REFUSED)" in line
    assert "(GOVERNANCE_BROKER_URL)" in line
    assert PASSWORD not in line


def test_dlq_list_with_the_broker_down_names_the_variable_and_exits_7(database_url: str) -> None:
    result = run_governance(database_url, nothing_listens(), "dlq", "list")

    line = one_line_error(result, EXIT_UNAVAILABLE)
    assert "cannot reach the broker at amqp://guest:***@127.0.0.1:" in line
    assert "(GOVERNANCE_BROKER_URL)" in line
    assert PASSWORD not in line


@pytest.mark.parametrize("args", [["show", "req-x"], ["pending"]], ids=["show", "pending"])
def test_reading_a_database_never_migrated_says_to_run_migrate(
    postgres_server_url: str, broker_url: str, args: list[str]
) -> None:
    with fresh_database(postgres_server_url) as url:
        result = run_governance(url, broker_url, *args)

    line = one_line_error(result, EXIT_UNAVAILABLE)
    assert "(GOVERNANCE_DATABASE_URL) has no governance schema" in line
    assert line.endswith("run `governance migrate` first")


def test_status_of_a_database_never_migrated_says_to_run_migrate(
    postgres_server_url: str, broker_url: str
) -> None:
    with fresh_database(postgres_server_url) as url:
        result = run_governance(url, broker_url, "status")

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_UNAVAILABLE
    (line,) = result.stderr.splitlines()
    assert "(GOVERNANCE_DATABASE_URL) has no governance schema" in line
    assert line.endswith("run `governance migrate` first")


def test_show_with_a_mysql_url_is_refused_naming_the_variable(broker_url: str) -> None:
    result = run_governance(f"mysql://app:{PASSWORD}@db/gov", broker_url, "show", "req-x")

    line = one_line_error(result, EXIT_USAGE)
    assert line.startswith("Error: GOVERNANCE_DATABASE_URL='mysql://app:***@db/gov'")
    assert "is not a PostgreSQL URL: give postgresql://" in line


def test_show_accepts_the_sqlalchemy_spelling_the_worker_accepts(
    database_url: str, broker_url: str
) -> None:
    sqlalchemy = database_url.replace("postgresql://", "postgresql+psycopg://", 1)

    result = run_governance(sqlalchemy, broker_url, "show", "req-never-submitted")

    # The database answered: the request does not exist (exit 4, as documented).
    assert (result.returncode, result.stderr) == (4, "Error: no request req-never-submitted\n")


def test_show_accepts_a_multi_host_url_and_reaches_the_host_that_answers(
    database_url: str, broker_url: str
) -> None:
    parts = urlsplit(database_url)
    hosts = f"127.0.0.1:{reserve_port()},{parts.hostname}:{parts.port or 5432}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{hosts}" if userinfo else hosts
    multi = urlunsplit((parts.scheme, netloc, parts.path, "target_session_attrs=any", ""))

    result = run_governance(multi, broker_url, "show", "req-never-submitted")

    assert (result.returncode, result.stderr) == (4, "Error: no request req-never-submitted\n")


def test_a_redis_broker_url_on_submit_is_refused_naming_the_variable(database_url: str) -> None:
    result = run_governance(database_url, "redis://localhost:6379/0", *submit_args())

    line = one_line_error(result, EXIT_USAGE)
    assert line.startswith("Error: GOVERNANCE_BROKER_URL='redis://localhost:6379/0'")
    assert "is not an AMQP URL" in line


def test_failover_to_the_second_broker_of_a_list(database_url: str, broker_url: str) -> None:
    down = f"amqp://guest:guest@127.0.0.1:{reserve_port()}//"

    result = run_governance(database_url, f"{down};{broker_url}", "dlq", "list")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_send_of_a_file_that_is_not_utf8_names_the_file(database_url: str, tmp_path: Path) -> None:
    latin1 = tmp_path / "commands.jsonl"
    latin1.write_bytes('{"reason": "déjà"}\n'.encode("latin-1"))

    result = run_governance(database_url, nothing_listens(), "send", str(latin1))

    line = one_line_error(result, EXIT_USAGE)
    assert line.startswith(f"Error: {latin1} is not UTF-8 text")
    assert "save it as UTF-8" in line


def test_send_of_an_empty_file_says_it_holds_no_commands(database_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n# nothing yet\n", encoding="utf-8")

    result = run_governance(database_url, nothing_listens(), "send", str(empty))

    assert one_line_error(result, EXIT_USAGE) == (
        f"Error: {empty} holds no commands: give one JSON command object per line"
    )


@pytest.mark.parametrize("timeout", ["0", "-5", "0s", "inf"])
def test_a_timeout_that_is_not_positive_is_refused_before_anything_is_sent(
    database_url: str, timeout: str
) -> None:
    # Against a broker that is down: had anything been sent, it would exit 7.
    result = run_governance(
        database_url,
        nothing_listens(),
        "approve",
        "req-x",
        "--expected-revision",
        "1",
        "--wait",
        "--timeout",
        timeout,
    )

    line = one_line_error(result, EXIT_USAGE)
    assert line.startswith("Error: Invalid value for '--timeout': expected a positive duration")


def test_watch_since_a_sequence_beyond_the_log_says_where_the_log_ends(
    database_url: str, broker_url: str
) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "governance_cli.main", "watch", "--since-sequence", "999999999"],
        cwd=PROJECT_ROOT,
        env=service_env(database_url, broker_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _first_line_within(watcher, 30.0)
    finally:
        watcher.terminate()
        watcher.wait(10)

    assert first is not None, "watch said nothing"
    assert first.startswith("the log ends at sequence ")
    assert first.endswith("; waiting for events after 999999999")


def _first_line_within(process: subprocess.Popen[str], seconds: float) -> str | None:
    assert process.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                return process.stderr.readline().rstrip("\n")
    return None


def test_help_never_prints_the_default_passwords(database_url: str) -> None:
    for args in (["submit", "--help"], ["watch", "--help"]):
        result = run_governance(database_url, nothing_listens(), *args)

        assert result.returncode == 0, result.stderr
        assert "amqp://governance:***@localhost:5672//" in " ".join(result.stdout.split())
        assert "governance:governance@" not in result.stdout


TRANSITIONS = [
    ["approve", "--expected-revision", "1"],
    ["reject", "--expected-revision", "1"],
    ["cancel", "--expected-revision", "1"],
    ["expire", "--expected-revision", "1"],
    ["mark-executed", "--expected-revision", "1"],
    ["move-to-pending", "--expected-revision", "1", "--pending-reason", "approval"],
    ["approve-requirement", "--expected-revision", "1", "--approval-id", "a-1"],
    ["reject-requirement", "--expected-revision", "1", "--approval-id", "a-1"],
    ["supersede", "--expected-revision", "1", "--superseding-request-id", "req-next"],
    [
        "resolve-version",
        "--expected-revision",
        "1",
        "--current-state-version",
        "v2",
        "--strategy",
        "reject_stale",
    ],
]


@pytest.mark.parametrize("args", TRANSITIONS, ids=[args[0] for args in TRANSITIONS])
def test_dry_run_prints_the_signed_command_and_sends_nothing(
    database_url: str, args: list[str]
) -> None:
    request_id = new_id()
    name, *options = args

    # Against a broker that is down: had it tried to send, it would exit 7.
    result = run_governance(
        database_url, nothing_listens(), name, request_id, *options, "--dry-run"
    )

    assert result.returncode == 0, result.stderr
    command = json.loads(result.stdout)
    assert (command["type"], command["request_id"]) == (name.replace("-", "_"), request_id)
    assert command["actor"]["id"] == "cli-user"
    assert command["audience"] == "governance"
    assert set(command["auth"]) >= {"key_id", "signature"}


def test_dry_run_of_submit_prints_the_command_it_would_send(database_url: str) -> None:
    result = run_governance(
        database_url, nothing_listens(), *submit_args("--requirement", "alice:1"), "--dry-run"
    )

    assert result.returncode == 0, result.stderr
    command = json.loads(result.stdout)
    assert command["type"] == "submit"
    assert command["args"]["intent"]["operation_name"] == "raise-limit"
    assert "auth" in command


def test_send_dry_run_prints_each_line_as_it_would_be_sent(
    database_url: str, tmp_path: Path
) -> None:
    commands = tmp_path / "commands.jsonl"
    line = {
        "command_id": new_id("cmd"),
        "type": "cancel",
        "request_id": new_id(),
        "expected_revision": 1,
        "actor": {"id": "cli-user", "type": "user"},
    }
    commands.write_text(json.dumps(line) + "\n", encoding="utf-8")

    result = run_governance(database_url, nothing_listens(), "send", str(commands), "--dry-run")

    assert result.returncode == 0, result.stderr
    (sent,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert {key: sent[key] for key in line} == line
    assert "auth" in sent


def test_version_is_the_installed_distributions(database_url: str) -> None:
    result = run_governance(database_url, nothing_listens(), "--version")

    assert (result.returncode, result.stdout) == (
        0,
        f"governance, version {version('governance-worker')}\n",
    )


def test_bash_completion_is_built_in(database_url: str) -> None:
    env = service_env(database_url, nothing_listens(), _GOVERNANCE_COMPLETE="bash_source")
    source = subprocess.run(
        [sys.executable, "-m", "governance_cli.main"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    env.update(
        _GOVERNANCE_COMPLETE="bash_complete", COMP_WORDS="governance resolve-v", COMP_CWORD="1"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "governance_cli.main"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert source.returncode == 0 and "complete -o nosort -F" in source.stdout
    assert completed.stdout.splitlines() == ["plain,resolve-version"]


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("GOVERNANCE_BROKER_URL", "http://x", "is not an AMQP URL"),
        ("GOVERNANCE_MAX_COMMAND_AGE", "nope", "is not a number"),
    ],
)
def test_a_worker_with_a_wrong_setting_stops_with_one_line_naming_it(
    database_url: str, broker_url: str, variable: str, value: str, complaint: str
) -> None:
    env = service_env(database_url, broker_url, **{variable: value})

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"governance worker: {variable}={value!r} {complaint}")
