"""The transition subcommands of ``governance``, run as real processes against a real worker,
with the exit codes of the contract."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from producer import GovernanceClient
from tests.support.commands import new_id
from tests.support.events import EventListener
from tests.support.identities import Keyring
from tests.support.processes import WorkerProcess, run_governance

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(broker_url, database_url, signing_key=Keyring()) as governance:
        yield governance


@pytest.fixture
def governance(running_worker: WorkerProcess, database_url: str, broker_url: str) -> Any:
    """Run ``governance ARGS...`` as a process; returns the completed process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_governance(database_url, broker_url, *args)

    return run


def submit_args(request_id: str, *extra: str) -> list[str]:
    return [
        "submit",
        request_id,
        "--state-id",
        "cfg-9",
        "--state-type",
        "config",
        "--mutation-type",
        "update",
        "--operation",
        "raise-limit",
        *extra,
    ]


def outcome(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    event: dict[str, Any] = json.loads(result.stdout)
    return event


#: Stands for a live request that a parametrised supersede is given, submitted by the test.
SUCCESSOR = "successor"


def pending_request(client: GovernanceClient) -> str:
    request_id = new_id()
    client.send_and_wait(
        client.submit(
            request_id,
            state_id="cfg-9",
            state_type="config",
            mutation_type="update",
            intent={"operation_name": "x"},
            actor="ci",
            pending_reason="manual_review",
        )
    )
    return request_id


def test_submit_with_wait_exits_0_and_prints_the_applied_event(governance: Any) -> None:
    # Given a new request id
    request_id = new_id()

    # When it is submitted with two approval steps, awaited, as JSON
    result = governance(
        *submit_args(
            request_id,
            "--risk-level",
            "high",
            "--requirement",
            "alice:1",
            "--requirement",
            "bob:2:bob-ok",
        ),
        "--wait",
        "--json",
    )

    # Then the exit code is 0 and the event shows it pending for both approvers
    assert result.returncode == 0, result.stderr
    event = outcome(result)
    assert (event["event_type"], event["to_status"]) == ("transition.applied", "pending")
    requirements = event["request"]["approval_requirements"]
    assert [(r["approver_id"], r["step_order"]) for r in requirements] == [("alice", 1), ("bob", 2)]
    assert requirements[1]["approval_id"] == "bob-ok"
    assert event["request"]["intent"]["risk_level"] == "high"


def test_a_request_walks_its_lifecycle_through_the_subcommands(governance: Any) -> None:
    # Given a created request made on state version v1
    request_id = new_id()
    assert (
        governance(*submit_args(request_id, "--expected-state-version", "v1"), "--wait").returncode
        == 0
    )

    # When it is moved to pending, approved, revalidated on v2 and marked executed
    steps = [
        ["move-to-pending", request_id, "--expected-revision", "1", "--pending-reason", "schedule"],
        ["approve", request_id, "--expected-revision", "2", "--actor", "alice"],
        [
            "resolve-version",
            request_id,
            "--expected-revision",
            "3",
            "--current-state-version",
            "v2",
            "--strategy",
            "revalidate_on_latest_state",
        ],
        ["mark-executed", request_id, "--expected-revision", "4"],
    ]
    results = [governance(*step, "--wait", "--json") for step in steps]

    # Then each exits 0 and moves it one revision on
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert [(outcome(r)["to_status"], outcome(r)["revision"]) for r in results] == [
        ("pending", 2),
        ("approved", 3),
        ("approved", 4),
        ("executed", 5),
    ]


def test_requirements_are_granted_and_refused_through_the_subcommands(governance: Any) -> None:
    # Given a request needing alice then bob
    request_id = new_id()
    submitted = governance(
        *submit_args(request_id, "--requirement", "alice:1:a1", "--requirement", "bob:2:b2"),
        "--wait",
    )
    assert submitted.returncode == 0, submitted.stderr

    # When alice grants hers and bob refuses his
    granted = governance(
        "approve-requirement",
        request_id,
        "--expected-revision",
        "1",
        "--approval-id",
        "a1",
        "--actor",
        "alice",
        "--wait",
        "--json",
    )
    refused = governance(
        "reject-requirement",
        request_id,
        "--expected-revision",
        "2",
        "--approval-id",
        "b2",
        "--actor",
        "bob",
        "--reason",
        "too risky",
        "--wait",
        "--json",
    )

    # Then both exit 0, and the request is rejected
    assert (granted.returncode, refused.returncode) == (0, 0)
    assert (outcome(granted)["to_status"], outcome(refused)["to_status"]) == ("pending", "rejected")


@pytest.mark.parametrize(
    ("subcommand", "extra", "final"),
    [
        ("reject", [], "rejected"),
        ("cancel", [], "canceled"),
        ("expire", [], "expired"),
        ("supersede", ["--superseding-request-id", SUCCESSOR], "superseded"),
    ],
)
def test_ending_subcommands_exit_0_and_end_the_request(
    governance: Any, client: GovernanceClient, subcommand: str, extra: list[str], final: str
) -> None:
    # Given a pending request at revision 1
    request_id = pending_request(client)
    if SUCCESSOR in extra:
        # (a supersede names a live request that exists)
        extra = [pending_request(client) if arg == SUCCESSOR else arg for arg in extra]

    # When the subcommand is run with --wait
    result = governance(
        subcommand, request_id, "--expected-revision", "1", *extra, "--wait", "--json"
    )

    # Then it exits 0 and the request is in its final status
    assert result.returncode == 0, result.stderr
    assert outcome(result)["to_status"] == final


def test_a_stale_revision_exits_3(governance: Any, client: GovernanceClient) -> None:
    # Given a pending request already approved at revision 1
    request_id = pending_request(client)
    client.send_and_wait(client.approve(request_id, expected_revision=1, actor="alice"))

    # When someone cancels it from the same stale snapshot
    result = governance("cancel", request_id, "--expected-revision", "1", "--wait", "--json")

    # Then the exit code is 3 and the event says what it lost to
    assert result.returncode == 3
    rejection = outcome(result)["rejection"]
    assert (rejection["code"], rejection["current_revision"], rejection["current_status"]) == (
        "concurrency_conflict",
        2,
        "approved",
    )


def test_any_other_rejection_exits_4(governance: Any) -> None:
    # Given no such request
    # When it is approved with --wait
    result = governance("approve", new_id(), "--expected-revision", "1", "--wait")

    # Then the exit code is 4 and the reason is said
    assert result.returncode == 4
    assert "not_found" in result.stdout


def test_a_command_that_fails_validation_exits_2_and_sends_nothing(
    governance: Any, client: GovernanceClient, db: psycopg.Connection[Any]
) -> None:
    # Given a request id the contract does not allow
    # When it is approved
    result = governance(
        "approve",
        "not valid!",
        "--expected-revision",
        "1",
        "--command-id",
        "cmd-invalid-cli",
        "--wait",
    )

    # Then the exit code is 2, the field is named, and the worker, having answered a later
    # command, never heard of it
    assert result.returncode == 2
    assert "request_id" in result.stderr
    pending_request(client)
    assert db.execute(
        "SELECT count(*) FROM processed_commands WHERE command_id = 'cmd-invalid-cli'"
    ).fetchone() == (0,)


def test_invalid_usage_exits_2(governance: Any) -> None:
    # Given an approve without its required --expected-revision / When it is run
    result = governance("approve", new_id(), "--wait")

    # Then click reports the usage error with exit code 2
    assert result.returncode == 2
    assert "--expected-revision" in result.stderr


def test_no_outcome_in_time_exits_5(
    governance: Any, client: GovernanceClient, database_url: str
) -> None:
    # Given a pending request whose row the test holds locked, so no worker can decide it
    request_id = pending_request(client)
    with psycopg.connect(database_url) as holder:
        holder.execute(
            "SELECT 1 FROM mutation_requests WHERE request_id = %s FOR UPDATE", (request_id,)
        )

        # When it is approved with a short timeout
        result = governance(
            "approve",
            request_id,
            "--expected-revision",
            "1",
            "--wait",
            "--timeout",
            "1s",
            "--resend-attempts",
            "1",
        )
        holder.rollback()

    # Then the exit code is 5
    assert result.returncode == 5
    assert "no outcome" in result.stderr


def test_without_wait_the_command_id_is_printed_and_the_command_is_applied(
    governance: Any, events: EventListener
) -> None:
    # Given a new request id / When it is submitted without --wait
    result = governance(*submit_args(new_id()), "--command-id", "cmd-" + new_id())

    # Then the command id is printed at once, and its outcome follows
    assert result.returncode == 0
    command_id = result.stdout.strip()
    outcome = events.wait_for([command_id])[command_id]
    assert outcome["event_type"] == "transition.applied", outcome.get("rejection")


def test_a_dry_run_prints_a_command_that_send_then_applies(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a pending request, and the approval of it printed by --dry-run
    request_id = pending_request(client)
    printed = governance("approve", request_id, "--expected-revision", "1", "--dry-run")
    assert printed.returncode == 0, printed.stderr
    command = json.loads(printed.stdout)
    view = client.queries.request(request_id)
    assert view is not None and view.request.revision == 1  # nothing was sent

    # When that very line is sent
    commands = tmp_path / "approve.jsonl"
    commands.write_text(printed.stdout, encoding="utf-8")
    sent = governance("send", str(commands), "--wait")

    # Then it is applied, as the command the dry run showed
    assert sent.returncode == 0, sent.stderr
    (record,) = [json.loads(line) for line in sent.stdout.splitlines()]
    assert (record["command_id"], record["outcome"]) == (
        command["command_id"],
        "transition.applied",
    )
