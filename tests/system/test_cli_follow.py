"""``governance show``, ``pending``, ``history``, ``watch``, ``wait`` and ``send``, run as real
processes against a real worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from governance.codec import command_to_dict
from governance.proof import b64url_encode
from producer import GovernanceClient, Queries
from producer.keys import key_file_document
from producer.signing import sign_command
from producer.subscriptions import Subscription
from tests.conftest import migrated_database
from tests.support.commands import new_id
from tests.support.identities import Keyring, key_for, sign, signing_env, trusted_worker_keys
from tests.support.processes import PROJECT_ROOT, WorkerProcess, service_env

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(broker_url, database_url, signing_key=Keyring()) as governance:
        yield governance


@pytest.fixture
def env(running_worker: WorkerProcess, database_url: str, broker_url: str) -> dict[str, str]:
    return service_env(database_url, broker_url)


def command_line(*args: str) -> list[str]:
    return [sys.executable, "-m", "governance_cli.main", *args]


@pytest.fixture
def governance(env: dict[str, str]) -> Any:
    """Run ``governance ARGS...`` to completion."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command_line(*args),
            cwd=PROJECT_ROOT,
            env={**env, **signing_env(args, default_actor=env.get("GOVERNANCE_ACTOR", "ci"))},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Any]:
    """Start ``governance ARGS...`` in the background; stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def launch(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command_line(*args),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield launch
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def submit(client: GovernanceClient, request_id: str, **kwargs: Any) -> dict[str, Any]:
    return client.send_and_wait(submit_command(client, request_id, **kwargs))


def submit_command(client: GovernanceClient, request_id: str, **kwargs: Any) -> Any:
    return client.submit(
        request_id,
        state_id=kwargs.pop("state_id", "db-1"),
        state_type="database",
        mutation_type="migrate",
        intent={"operation_name": "add-index"},
        actor=kwargs.pop("actor", "ci"),
        **kwargs,
    )


# ----------------------------------------------------------------------------- show / pending


def test_show_prints_the_request_and_its_history(governance: Any, client: GovernanceClient) -> None:
    # Given a request awaiting alice
    request_id = new_id()
    submit(client, request_id, approval_requirements=[{"approver_id": "alice"}])

    # When it is shown, for people and as JSON
    table = governance("show", request_id)
    as_json = governance("show", request_id, "--json")

    # Then both show its status, revision, requirement and decisions
    assert (table.returncode, as_json.returncode) == (0, 0)
    assert "pending" in table.stdout and "alice" in table.stdout
    assert "lifecycle.submitted" in table.stdout
    body = json.loads(as_json.stdout)
    assert (body["status"], body["revision"]) == ("pending", 1)
    assert [d["type"] for d in body["decisions"]] == ["submitted", "pending", "requested"]


def test_show_of_an_unknown_request_exits_4(governance: Any) -> None:
    # Given no such request / When it is shown / Then exit 4 and a message
    result = governance("show", new_id())
    assert result.returncode == 4
    assert "no request" in result.stderr


def test_pending_lists_the_queue_of_an_approver(governance: Any, client: GovernanceClient) -> None:
    # Given, on a fresh state, one request awaiting carol and one awaiting dave
    state = new_id("db")
    for_carol = new_id()
    submit(client, for_carol, state_id=state, approval_requirements=[{"approver_id": "carol"}])
    submit(client, new_id(), state_id=state, approval_requirements=[{"approver_id": "dave"}])

    # When carol's queue on that state is listed, as JSON and as a table
    as_json = governance("pending", "--state-id", state, "--approver", "carol", "--json")
    table = governance("pending", "--state-id", state, "--reason", "approval")

    # Then the JSON holds only hers, the table both
    assert [r["request_id"] for r in json.loads(as_json.stdout)] == [for_carol]
    assert for_carol in table.stdout and table.stdout.count(state) == 2


def test_history_lists_an_actors_decisions(governance: Any, client: GovernanceClient) -> None:
    # Given a fresh actor who approved a request
    actor, request_id = new_id("auditor"), new_id()
    submit(client, request_id, pending_reason="manual_review")
    client.send_and_wait(client.approve(request_id, expected_revision=1, actor=actor))

    # When that actor's history is listed
    result = governance("history", "--actor", actor, "--json")

    # Then it holds that one approval
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["request_id"], d["type"], d["revision"]) for d in lines] == [
        (request_id, "approved", 2)
    ]


# ----------------------------------------------------------------------------- watch


def test_watch_follows_the_events_of_a_request(start: Any, client: GovernanceClient) -> None:
    # Given a watcher of one request, listening
    request_id = new_id()
    watcher = start("watch", "--request-id", request_id, "--count", "2", "--json")
    assert "following events" in watcher.stderr.readline()

    # When the request is submitted and approved
    submit(client, request_id, pending_reason="quota")
    client.send_and_wait(client.approve(request_id, expected_revision=1, actor="alice"))

    # Then the watcher printed both events, in order, and stopped
    stdout, _ = watcher.communicate(timeout=60)
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [(e["command_type"], e["revision"]) for e in events] == [("submit", 1), ("approve", 2)]
    assert watcher.returncode == 0


def test_watch_since_sequence_replays_the_log(
    governance: Any, client: GovernanceClient, database_url: str
) -> None:
    # Given two events after a known point of the log
    since = Queries(database_url).last_sequence()
    request_id = new_id()
    submit(client, request_id, pending_reason="quota")
    client.send_and_wait(client.cancel(request_id, expected_revision=1, actor="bob"))

    # When the log is replayed from that point
    result = governance(
        "watch", "--since-sequence", str(since), "--request-id", request_id, "--count", "2"
    )

    # Then both are printed, readable, in order
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "applied submit" in lines[0] and "applied cancel" in lines[1]


def test_watch_whose_reader_stops_reading_ends_quietly_as_a_closed_pipe(
    start: Any, client: GovernanceClient
) -> None:
    # Given events in the log
    submit(client, new_id(), pending_reason="quota")
    submit(client, new_id(), pending_reason="quota")
    # When `governance watch --since-sequence 0 | head -1` has read its line
    watch = start("watch", "--since-sequence", "0")
    assert watch.stdout.readline()
    watch.stdout.close()
    # (and has something more to write: the replay may have fitted in the pipe before)
    submit(client, new_id(), pending_reason="quota")
    # Then watch ends with a closed pipe's code (128 + SIGPIPE), blaming no service
    assert watch.wait(timeout=120) == 141
    assert "Error" not in watch.stderr.read()


def test_watch_interrupted_with_ctrl_c_exits_130_without_a_word(
    start: Any, client: GovernanceClient
) -> None:
    # Given watch following the live stream (it runs until Ctrl-C)
    watch = start("watch", "--since-sequence", "0")
    assert watch.stdout.readline()
    # When its user presses Ctrl-C
    watch.send_signal(signal.SIGINT)
    # Then it exits 130, as a shell reports an interrupted program, printing no "Aborted!"
    assert watch.wait(timeout=120) == 130
    assert "Aborted" not in watch.stderr.read()


# ----------------------------------------------------------------------------- wait


def test_wait_returns_at_once_when_the_status_is_already_reached(
    governance: Any, client: GovernanceClient
) -> None:
    # Given an approved request
    request_id = new_id()
    approved = submit(client, request_id, initial_status="approved")

    # When a pipeline waits for approved or rejected
    result = governance("wait", request_id, "--until", "approved,rejected", "--json")

    # Then it exits 0 with the event that got it there
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event_id"] == approved["event_id"]


def test_wait_returns_on_a_later_event(start: Any, client: GovernanceClient) -> None:
    # Given a pending request and a gate waiting for it, listening
    request_id = new_id()
    submit(client, request_id, pending_reason="manual_review")
    gate = start("wait", request_id, "--until", "approved,rejected", "--timeout", "2m", "--json")
    assert "now pending" in gate.stderr.readline()

    # When the request is approved
    approved = client.send_and_wait(client.approve(request_id, expected_revision=1, actor="a"))

    # Then the gate exits 0 with that event
    stdout, _ = gate.communicate(timeout=60)
    assert gate.returncode == 0
    assert json.loads(stdout)["event_id"] == approved["event_id"]


def test_wait_exits_4_when_the_request_ended_otherwise(
    governance: Any, client: GovernanceClient
) -> None:
    # Given a canceled request
    request_id = new_id()
    submit(client, request_id, pending_reason="manual_review")
    client.send_and_wait(client.cancel(request_id, expected_revision=1, actor="a"))

    # When a pipeline waits for it to be approved
    result = governance("wait", request_id, "--until", "approved")

    # Then it exits 4: it never will be
    assert result.returncode == 4
    assert "canceled" in result.stderr


def test_wait_exits_5_on_timeout(governance: Any, client: GovernanceClient) -> None:
    # Given a request that stays pending
    request_id = new_id()
    submit(client, request_id, pending_reason="manual_review")

    # When a pipeline waits one second for approval
    result = governance("wait", request_id, "--until", "approved", "--timeout", "1s")

    # Then it exits 5
    assert result.returncode == 5
    assert "timed out" in result.stderr


# ----------------------------------------------------------------------------- send


def test_send_of_a_thousand_commands_writes_every_outcome(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a JSON-lines file of 1,000 submits
    commands = [command_to_dict(submit_command(client, new_id())) for _ in range(1000)]
    source = tmp_path / "commands.jsonl"
    source.write_text("".join(json.dumps(c) + "\n" for c in commands))
    results = tmp_path / "results.jsonl"

    # When it is sent with --wait and a results file
    result = governance("send", str(source), "--wait", "--results", str(results), "--timeout", "2m")

    # Then it exits 0, with one applied outcome per command and a summary
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["command_id"] for r in records) == sorted(c["command_id"] for c in commands)
    assert {(r["exit_code"], r["event"]["event_type"]) for r in records} == {
        (0, "transition.applied")
    }
    assert "1000 command(s): 1000 applied" in result.stderr


def test_send_exits_with_the_worst_outcome(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a file with a submit, a stale approve (conflict) and an approve of nothing
    request_id = new_id()
    submit(client, request_id, pending_reason="quota")
    client.send_and_wait(client.approve(request_id, expected_revision=1, actor="a"))
    # (each line signed by its own actor, as the tools that wrote them would)
    lines = [
        sign(command_to_dict(submit_command(client, new_id()))),
        sign(command_to_dict(client.cancel(request_id, expected_revision=1, actor="b"))),
        sign(command_to_dict(client.approve(new_id(), expected_revision=1, actor="c"))),
    ]
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines))

    # When it is sent with --wait, as signed, results on stdout
    result = governance("send", str(source), "--wait", "--keep-signatures")

    # Then each line has its code, and the process exits with the worst (4)
    codes = {r["line"]: r["exit_code"] for r in map(json.loads, result.stdout.splitlines())}
    assert codes == {1: 0, 2: 3, 3: 4}
    assert result.returncode == 4


def test_send_refuses_a_line_signed_with_another_key_unless_told_to_keep_it(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a line signed by another actor's key
    request_id = new_id()
    source = tmp_path / "foreign.jsonl"
    foreign = sign(command_to_dict(submit_command(client, request_id, actor="someone-else")))
    source.write_text(json.dumps(foreign) + "\n")

    # When it is sent with this shell's key
    result = governance("send", str(source), "--wait")

    # Then it exits 2 naming the key, and nothing was sent
    assert result.returncode == 2, result.stderr
    assert "already signed with key test-someone-else" in result.stderr
    assert client.queries.request(request_id) is None


def signed_line(client: GovernanceClient, request_id: str, **changes: Any) -> dict[str, Any]:
    """A submit for ``request_id`` signed with the shell's key (actor ``ci``), then changed."""
    line: dict[str, Any] = sign(command_to_dict(submit_command(client, request_id)))
    return {**line, **changes}


def send_line(governance: Any, tmp_path: Path, line: dict[str, Any], *args: str) -> Any:
    source = tmp_path / "line.jsonl"
    source.write_text(json.dumps(line) + "\n")
    return governance("send", str(source), "--wait", *args)


def test_send_refuses_a_line_of_its_own_key_whose_signature_does_not_verify(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a line naming the shell's key with a signature that key never made
    request_id = new_id()
    line = signed_line(client, request_id)
    line["auth"] = {**line["auth"], "signature": b64url_encode(bytes(64))}
    # When it is sent, as it is or to be signed afresh
    for extra in ((), ("--keep-signatures",)):
        result = send_line(governance, tmp_path, line, *extra)
        # Then it exits 2 with one line naming the signature, and nothing was sent
        assert result.returncode == 2, result.stderr
        assert "line 1: auth.signature: does not verify with key test-ci" in result.stderr
        assert "Traceback" not in result.stderr
    assert client.queries.request(request_id) is None


def test_send_refuses_a_line_signed_for_another_audience(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    request_id = new_id()
    line = sign_command(
        command_to_dict(submit_command(client, request_id)), key_for("ci"), audience="staging"
    )

    result = send_line(governance, tmp_path, line)

    assert result.returncode == 2, result.stderr
    assert "line 1: audience: signed for 'staging', not 'governance'" in result.stderr
    assert client.queries.request(request_id) is None


def test_send_refuses_a_line_of_its_own_key_naming_another_actor_without_a_traceback(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    request_id = new_id()
    line = signed_line(client, request_id, actor={"id": "mallory"})

    result = send_line(governance, tmp_path, line)

    assert result.returncode == 2, result.stderr
    assert "line 1: actor.id: mallory is not the signing key's actor ci" in result.stderr
    assert "Traceback" not in result.stderr
    assert client.queries.request(request_id) is None


def test_send_applies_a_line_its_own_key_signed(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    request_id = new_id()

    result = send_line(governance, tmp_path, signed_line(client, request_id))

    assert result.returncode == 0, result.stderr
    assert client.queries.request(request_id) is not None


def test_send_refuses_a_key_file_others_may_read(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given the shell's key in a file group and others may read
    exposed = tmp_path / "exposed.key"
    exposed.write_text(json.dumps(key_file_document(key_for("ci"))), encoding="utf-8")
    exposed.chmod(0o644)
    request_id = new_id()
    source = tmp_path / "unsigned.jsonl"
    source.write_text(json.dumps(command_to_dict(submit_command(client, request_id))) + "\n")
    # When it signs a send
    result = governance("send", str(source), "--wait", "--signing-key", str(exposed))
    # Then it is refused in one line naming the file and the fix, and nothing was sent
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert str(exposed) in line and "mode 0644" in line and "chmod 600" in line
    assert client.queries.request(request_id) is None


def test_send_of_a_file_with_an_invalid_line_exits_2_and_sends_nothing(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a file with a valid submit and a line that is not a command
    request_id = new_id()
    source = tmp_path / "bad.jsonl"
    valid = command_to_dict(submit_command(client, request_id))
    source.write_text(json.dumps(valid) + '\n{"type": "approve"}\n')

    # When it is sent
    result = governance("send", str(source), "--wait")

    # Then it exits 2 naming the line and field, and the valid command was not sent either
    assert result.returncode == 2
    assert "line 2: command_id: required" in result.stderr
    assert client.queries.request(request_id) is None


def test_send_with_skip_invalid_sends_the_valid_lines_and_still_exits_2(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a file with a valid submit and a line that is not JSON
    request_id = new_id()
    source = tmp_path / "partly-bad.jsonl"
    valid = command_to_dict(submit_command(client, request_id))
    source.write_text(json.dumps(valid) + "\nnot json\n")

    # When it is sent with --skip-invalid and --wait
    result = governance("send", str(source), "--wait", "--skip-invalid")

    # Then the valid line was applied, the bad one recorded with 2, and the exit code is 2
    codes = {r["line"]: r["exit_code"] for r in map(json.loads, result.stdout.splitlines())}
    assert codes == {1: 0, 2: 2}
    assert result.returncode == 2
    assert client.queries.request(request_id) is not None


def test_send_without_wait_reports_each_command_sent(
    governance: Any, client: GovernanceClient, tmp_path: Path
) -> None:
    # Given a file of three submits
    commands = [command_to_dict(submit_command(client, new_id())) for _ in range(3)]
    source = tmp_path / "fire.jsonl"
    source.write_text("".join(json.dumps(c) + "\n" for c in commands))

    # When it is sent without --wait
    result = governance("send", str(source))

    # Then it exits 0 with a "sent" record per command, and the commands are applied
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0
    assert [(r["command_id"], r["outcome"]) for r in records] == [
        (c["command_id"], "sent") for c in commands
    ]
    outcomes = client.send_all_and_wait(commands)  # re-sending is idempotent: same outcomes
    assert all(o is not None and o["event_type"] == "transition.applied" for o in outcomes)


def test_watch_delete_removes_a_durable_subscription(governance: Any, broker_url: str) -> None:
    name = f"audit-{new_id()}"
    with Subscription(broker_url, name=name, verifier=trusted_worker_keys()):
        pass  # the queue is created and kept while its subscriber is away

    deleted = governance("watch", "--name", name, "--delete")
    again = governance("watch", "--name", name, "--delete")

    assert deleted.returncode == 0, deleted.stderr
    assert again.returncode == 1
    assert again.stderr.strip() == f"Error: no subscription {name}"


def test_watch_since_a_pruned_sequence_says_where_the_log_starts(
    postgres_server_url: str, broker_url: str
) -> None:
    with migrated_database(postgres_server_url) as url, psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO log_horizon (log, pruned_through, pruned_at) VALUES ('outbox', 41, now())"
        )
        result = subprocess.run(
            command_line("watch", "--since-sequence", "10"),
            cwd=PROJECT_ROOT,
            env=service_env(url, broker_url),
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("(start at 42 or later)")
    assert "Traceback" not in result.stderr
