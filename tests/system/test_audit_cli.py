"""``governance verify`` and ``governance export`` as real processes, with their exit codes:
0 all holds, 6 something was altered, 2 invalid usage (a missing anchor file without
``--init`` too), 4 no such request.

Histories are written through the guarded path (signed, as each actor's test key) in a
private database per test, then altered there as someone holding the database could.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rfc8785

from governance.proof import b64url_encode
from producer.audit import (
    ANCHOR_FORMAT,
    head_of,
    read_all_request_ids,
    read_request_history,
    write_anchor,
)
from producer.keys import SigningKey, write_key_file
from tests.conftest import migrated_database
from tests.integration.test_audit import approved_request, tamper
from tests.support import identities
from tests.support.commands import due_soon, new_id, submit
from tests.support.processes import PROJECT_ROOT, service_env
from tests.support.services import fresh_database
from tests.support.signed import apply_command
from tests.support.tampering import cut_short
from worker.expiry import expire_command

pytestmark = pytest.mark.system

#: Nothing listens there: a command that must not need a database proves it does not.
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/none"


def run_cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = service_env(database_url, "amqp://unused//", **env)
    if "GOVERNANCE_SIGNING_KEY" not in env:
        environment.pop("GOVERNANCE_SIGNING_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def private_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of this test alone (``verify --all`` sees only its requests)."""
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def conn(private_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(private_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def governance(private_url: str) -> Any:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(private_url, *args, **env)

    return run


def altered_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("altered: ")]


# --------------------------------------------------------------------------- verify REQUEST_ID


def test_a_written_history_verifies(governance: Any, conn: psycopg.Connection[Any]) -> None:
    request_id = approved_request(conn)

    text = governance("verify", request_id)
    as_json = governance("verify", request_id, "--json", "--require-signed")

    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout == ""
    assert "verified 1 request(s)" in text.stderr and "0 failure(s)" in text.stderr
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["ok"] is True and document["findings"] == []


def test_an_updated_reason_exits_6_naming_the_decision(
    governance: Any, conn: psycopg.Connection[Any]
) -> None:
    # Given a history whose approval reason is rewritten in the database
    request_id = approved_request(conn)
    tamper(
        conn,
        "UPDATE request_decisions SET reason = 'nobody looked' "
        "WHERE request_id = %s AND revision = 2",
        (request_id,),
    )

    # When it is verified
    result = governance("verify", request_id)

    # Then it exits 6, one line per finding, each naming the request and the decision
    assert result.returncode == 6, result.stdout + result.stderr
    lines = altered_lines(result)
    assert len(lines) == 3
    assert any("chain_hash" in line for line in lines)
    assert any("'nobody looked' is not the signed command's" in line for line in lines)
    # (the chain and the kept command's form name the decision; re-execution, the revision)
    assert sum(f"request {request_id}, decision 2/1 " in line for line in lines) == 2
    assert any(
        f"request {request_id}, revision 2 " in line
        and "reason is 'nobody looked', re-execution gives 'checked the diff'" in line
        for line in lines
    )
    everything = governance("verify", "--all", "--json")
    assert everything.returncode == 6
    assert json.loads(everything.stdout)["failures"] == 3


def test_a_due_expiry_by_the_worker_is_listed_unsigned_and_holds_with_require_signed(
    governance: Any, conn: psycopg.Connection[Any]
) -> None:
    # Given a request expired by the worker itself once it was due (never signed)
    request_id = new_id()
    payload = submit(request_id, initial_status="pending", expires_at=due_soon())
    assert apply_command(conn, payload).applied
    time.sleep(0.6)
    assert apply_command(conn, expire_command(request_id, 1)).applied

    listed = governance("verify", request_id)
    required = governance("verify", request_id, "--require-signed")

    # Then it is listed as unsigned, and holds even with signatures required
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout == (
        f"unsigned: request {request_id}, decision 2/1 (command "
        f"{expire_command(request_id, 1)['command_id']}): no signature (the system actor's "
        "expiry)\n"
    )
    assert required.returncode == 0, required.stdout + required.stderr
    assert required.stdout == listed.stdout


def test_an_expiry_by_the_worker_of_a_request_not_yet_due_exits_6(
    governance: Any, conn: psycopg.Connection[Any]
) -> None:
    # Given an unsigned "system expiry" of a request that had no expiry at all (what the
    # worker's database role can write; the worker itself never would)
    request_id = new_id()
    assert apply_command(conn, submit(request_id, initial_status="pending")).applied
    assert apply_command(conn, expire_command(request_id, 1)).applied

    result = governance("verify", request_id)

    assert result.returncode == 6
    assert (
        f"altered: request {request_id}, revision 2 (command "
        f"{expire_command(request_id, 1)['command_id']}): an unsigned expiry of a request that "
        "was not pending past its expiry at the decision time"
    ) in result.stdout


def test_verify_all_in_two_processes_finds_what_one_process_finds(
    governance: Any, conn: psycopg.Connection[Any]
) -> None:
    # Given five approved requests, one of them with its approval's reason rewritten
    request_ids = [approved_request(conn) for _ in range(5)]
    tamper(
        conn,
        "UPDATE request_decisions SET reason = 'nobody looked' "
        "WHERE request_id = %s AND revision = 2",
        (request_ids[2],),
    )

    # When every request is verified in one process and in two, a page of two at a time
    one = governance("verify", "--all", "--json")
    two = governance("verify", "--all", "--jobs", "2", "--page-size", "2", "--json")

    # Then both exit 6 with the same findings, on the same request
    assert (one.returncode, two.returncode) == (6, 6), two.stderr
    assert json.loads(two.stdout) == json.loads(one.stdout)
    assert {f["message"] for f in json.loads(two.stdout)["findings"]} and all(
        request_ids[2] in line for line in altered_lines(governance("verify", "--all"))
    )


def test_a_request_that_does_not_exist_exits_4(governance: Any) -> None:
    result = governance("verify", new_id())

    assert result.returncode == 4
    assert "no request" in result.stderr


# --------------------------------------------------------------------------- anchors

#: The operator's public key, pinned with --anchor-key as an operator would (from outside
#: the database).
OPERATOR_PUBLIC_KEY = identities.key_for("operator").public_key_b64


def forge_anchor(conn: psycopg.Connection[Any], key: SigningKey, path: Path) -> None:
    """Write an anchor over the database's history as it stands now, signed with ``key``,
    as someone holding the database can (the heads are no secret): no registry check."""
    heads = {}
    for request_id in read_all_request_ids(conn):
        history = read_request_history(conn, request_id)
        assert history is not None
        heads[request_id] = head_of(history).to_dict()
    body = {
        "format": ANCHOR_FORMAT,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "key_id": key.key_id,
        "actor_id": key.actor_id,
        "public_key": key.public_key_b64,
        "heads": heads,
    }
    body["signature"] = b64url_encode(key.sign(rfc8785.dumps(body)))
    path.write_text(json.dumps(body, indent=2), encoding="utf-8")


def rewrite_approval(conn: psycopg.Connection[Any], request_id: str) -> None:
    """Cut the request's history short of its approval (decisions, kept command and the row
    set back to revision 1): the chain and re-execution alone then hold."""
    cut_short(conn, request_id, 1)


def test_an_anchor_proves_a_history_cut_short_that_nothing_else_can_show(
    governance: Any, conn: psycopg.Connection[Any], private_url: str, tmp_path: Path
) -> None:
    # Given an anchor written with the operator's key, then checked and renewed
    request_id = approved_request(conn)
    key = identities.key_file(tmp_path, "operator")
    anchor = tmp_path / "anchor.json"
    pinned = ("--anchor-key", OPERATOR_PUBLIC_KEY)
    first = governance(
        "verify", "--all", "--anchor", str(anchor), *pinned, "--init", "--signing-key", str(key)
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"anchor {anchor}: written (1 request(s))" in first.stderr
    renewed = governance(
        "verify", "--all", "--anchor", str(anchor), *pinned, GOVERNANCE_SIGNING_KEY=str(key)
    )
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "1 request(s) checked" in renewed.stderr
    assert request_id in json.loads(anchor.read_text(encoding="utf-8"))["heads"]

    # When the owner cuts the history short of its approval, the row set back with it
    rewrite_approval(conn, request_id)
    before = anchor.read_bytes()

    # Then the chain and re-execution alone hold, but the anchor exits 6 naming the
    # request, and stays
    assert governance("verify", "--all").returncode == 0
    result = governance(
        "verify", "--all", "--anchor", str(anchor), *pinned, "--signing-key", str(key)
    )
    assert result.returncode == 6, result.stdout + result.stderr
    (line,) = altered_lines(result)
    assert line.startswith(f"altered: request {request_id}: the anchor of ")
    assert "has 3 decision(s), only 2 remain (removed)" in line
    assert "not renewed" in result.stderr
    assert anchor.read_bytes() == before


@pytest.mark.parametrize(
    "registered",
    [
        pytest.param(True, id="key-registered-by-whoever-holds-the-database"),
        pytest.param(False, id="key-not-registered"),
    ],
)
def test_an_anchor_signed_by_a_key_not_pinned_launders_nothing(
    governance: Any,
    conn: psycopg.Connection[Any],
    private_url: str,
    tmp_path: Path,
    registered: bool,
) -> None:
    # Given a rewritten history and, in the anchor file, an anchor over it signed by a key
    # of whoever rewrote it (registered as an operator in the database they hold, or not)
    request_id = approved_request(conn)
    operator_key = identities.key_file(tmp_path, "operator")
    rewrite_approval(conn, request_id)
    intruder_id = new_id("intruder")
    if registered:
        intruder = identities.register(private_url, intruder_id, roles=("operator",))
    else:
        intruder = identities.key_for(intruder_id)
    anchor = tmp_path / "anchor.json"
    forge_anchor(conn, intruder, anchor)
    forged = anchor.read_bytes()

    # When the operator checks it, pinning the operator's key
    result = governance(
        "verify",
        "--all",
        "--anchor",
        str(anchor),
        "--anchor-key",
        OPERATOR_PUBLIC_KEY,
        "--signing-key",
        str(operator_key),
    )

    # Then it exits 6 naming the anchor's key, and no genuine anchor is written over it
    assert result.returncode == 6, result.stdout + result.stderr
    (line,) = altered_lines(result)
    assert f"signed by key {intruder.key_id}" in line and "not a pinned key" in line
    assert "not renewed" in result.stderr
    assert anchor.read_bytes() == forged


def test_a_missing_anchor_is_an_error_without_init(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Given a history and an anchor file that is not there (removed, or never written)
    approved_request(conn)
    key = identities.key_file(tmp_path, "operator")
    anchor = tmp_path / "anchor.json"

    # When verify is asked to check it, without --init
    result = governance(
        "verify",
        "--all",
        "--anchor",
        str(anchor),
        "--anchor-key",
        OPERATOR_PUBLIC_KEY,
        "--signing-key",
        str(key),
    )

    # Then it is a usage error (2, as for any missing input file) and no anchor is created
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"there is no anchor {anchor}: give --init" in result.stderr
    assert not anchor.exists()


def test_init_writes_the_first_anchor(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    request_id = approved_request(conn)
    key = identities.key_file(tmp_path, "operator")
    anchor = tmp_path / "anchor.json"

    result = governance(
        "verify",
        "--all",
        "--anchor",
        str(anchor),
        "--anchor-key",
        OPERATOR_PUBLIC_KEY,
        "--init",
        "--signing-key",
        str(key),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"anchor {anchor}: written (1 request(s))" in result.stderr
    document = json.loads(anchor.read_text(encoding="utf-8"))
    assert document["public_key"] == OPERATOR_PUBLIC_KEY
    assert list(document["heads"]) == [request_id]


def pinned_as(form: str, tmp_path: Path) -> str:
    """The operator's key as --anchor-key takes it: the key, a file holding it (keygen's
    output saved), or the operator's key file."""
    if form == "key":
        return OPERATOR_PUBLIC_KEY
    if form == "public-key-file":
        path = tmp_path / "operator.pub"
        path.write_text(OPERATOR_PUBLIC_KEY + "\n", encoding="utf-8")
        return str(path)
    return str(identities.key_file(tmp_path, "operator"))


@pytest.mark.parametrize("form", ["key", "public-key-file", "key-file"])
def test_a_genuine_anchor_signed_by_a_pinned_key_passes_and_is_renewed(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path, form: str
) -> None:
    # Given an anchor the operator wrote, and a request approved since
    approved_request(conn)
    key = identities.key_file(tmp_path, "operator")
    anchor = tmp_path / "anchor.json"
    write_anchor(conn, identities.key_for("operator"), anchor)
    first = json.loads(anchor.read_text(encoding="utf-8"))
    later = approved_request(conn)

    # When it is checked with the operator's key pinned, and a second key pinned beside it
    result = governance(
        "verify",
        "--all",
        "--anchor",
        str(anchor),
        "--anchor-key",
        identities.key_for("another-operator").public_key_b64,
        "--anchor-key",
        pinned_as(form, tmp_path),
        "--signing-key",
        str(key),
    )

    # Then it holds, and is renewed to hold the request approved since
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"anchor {anchor}: 1 request(s) checked" in result.stderr
    assert f"anchor {anchor}: written (2 request(s))" in result.stderr
    renewed = json.loads(anchor.read_text(encoding="utf-8"))
    assert renewed["created_at"] > first["created_at"]
    assert later in renewed["heads"] and later not in first["heads"]


def test_anchor_usage_errors_exit_2(
    governance: Any, conn: psycopg.Connection[Any], private_url: str, tmp_path: Path
) -> None:
    request_id = approved_request(conn)
    anchor = str(tmp_path / "anchor.json")
    operator_key = str(identities.key_file(tmp_path, "operator"))
    requester = identities.register(private_url, new_id("requester"), roles=("requester",))
    requester_key = tmp_path / "requester.key"
    write_key_file(requester, requester_key)
    first = ("--anchor", anchor, "--init")
    pinned = ("--anchor-key", OPERATOR_PUBLIC_KEY)

    without_pin = governance("verify", "--all", *first, "--signing-key", operator_key)
    bad_pin = governance(
        "verify", "--all", *first, "--anchor-key", "operator", "--signing-key", operator_key
    )
    without_key = governance("verify", "--all", *first, *pinned)
    key_not_pinned = governance(
        "verify", "--all", *first, *pinned, "--signing-key", str(requester_key)
    )
    not_operator = governance(
        "verify",
        "--all",
        *first,
        "--anchor-key",
        requester.public_key_b64,
        "--signing-key",
        str(requester_key),
    )
    bad_key_file = governance(
        "verify", "--all", *first, *pinned, "--signing-key", str(tmp_path / "missing.key")
    )
    without_all = governance("verify", request_id, "--anchor", anchor, *pinned)
    without_anchor = governance("verify", "--all", "--init", *pinned)

    assert without_pin.returncode == 2 and "--anchor-key KEY_OR_FILE" in without_pin.stderr
    assert bad_pin.returncode == 2 and "--anchor-key: 'operator' is neither" in bad_pin.stderr
    assert without_key.returncode == 2 and "--signing-key" in without_key.stderr
    assert key_not_pinned.returncode == 2 and "not one of the pinned" in key_not_pinned.stderr
    assert not_operator.returncode == 2 and "no operator role" in not_operator.stderr
    assert bad_key_file.returncode == 2 and "missing.key" in bad_key_file.stderr
    assert without_all.returncode == 2 and "--anchor goes with --all" in without_all.stderr
    assert without_anchor.returncode == 2 and "go with --anchor" in without_anchor.stderr
    assert not os.path.exists(anchor)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="nothing"),
        pytest.param(["REQ", "--all"], id="request-and-all"),
        pytest.param(["--all", "--file", "x.json"], id="all-and-file"),
    ],
)
def test_verify_takes_exactly_one_subject(governance: Any, args: list[str]) -> None:
    result = governance("verify", *args)

    assert result.returncode == 2
    assert "exactly one of REQUEST_ID, --all or --file" in result.stderr


# --------------------------------------------------------------------------- export


def test_an_export_verifies_with_no_database_and_not_once_edited(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Given a request's history exported to a file, and to stdout
    request_id = approved_request(conn)
    path = tmp_path / "export.json"
    exported = governance("export", request_id, "--out", str(path))
    to_stdout = governance("export", request_id)
    assert exported.returncode == 0, exported.stderr
    assert to_stdout.returncode == 0, to_stdout.stderr
    document = json.loads(path.read_text(encoding="utf-8"))
    assert json.loads(to_stdout.stdout)["decisions"] == document["decisions"]
    assert document["request"]["request_id"] == request_id

    # When it is verified where no database answers
    clean = run_cli(NO_DATABASE, "verify", "--file", str(path))

    # Then it holds; and once a decision in it is edited, it exits 6 naming it
    assert clean.returncode == 0, clean.stdout + clean.stderr
    document["decisions"][0]["reason"] = "edited"
    path.write_text(json.dumps(document), encoding="utf-8")
    edited = run_cli(NO_DATABASE, "verify", "--file", str(path))
    assert edited.returncode == 6, edited.stdout + edited.stderr
    assert any(f"request {request_id}, decision 1/1 " in line for line in altered_lines(edited))


def test_a_file_that_is_no_export_is_a_usage_error(tmp_path: Path) -> None:
    not_json = tmp_path / "not.json"
    not_json.write_text("{", encoding="utf-8")
    other = tmp_path / "other.json"
    other.write_text('{"format": "x"}', encoding="utf-8")

    assert run_cli(NO_DATABASE, "verify", "--file", str(not_json)).returncode == 2
    result = run_cli(NO_DATABASE, "verify", "--file", str(other))
    assert result.returncode == 2 and "not a governance export" in result.stderr


def test_exporting_a_request_that_does_not_exist_exits_4(governance: Any) -> None:
    result = governance("export", new_id())

    assert result.returncode == 4
    assert "no request" in result.stderr


def test_an_anchor_path_holding_no_anchor_is_left_alone(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    approved_request(conn)
    key = identities.key_file(tmp_path, "operator")
    not_an_anchor = tmp_path / "notes.json"
    not_an_anchor.write_text('{"format": "notes"}', encoding="utf-8")

    result = governance(
        "verify",
        "--all",
        "--anchor",
        str(not_an_anchor),
        "--anchor-key",
        OPERATOR_PUBLIC_KEY,
        "--signing-key",
        str(key),
    )

    assert result.returncode == 2
    assert "is not an anchor" in result.stderr and "left as it is" in result.stderr
    assert not_an_anchor.read_text(encoding="utf-8") == '{"format": "notes"}'


def test_an_anchor_that_cannot_be_written_is_an_error(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    approved_request(conn)
    key = identities.key_file(tmp_path, "operator")

    result = governance(
        "verify",
        "--all",
        "--anchor",
        str(tmp_path / "no-dir" / "a.json"),
        "--anchor-key",
        OPERATOR_PUBLIC_KEY,
        "--init",
        "--signing-key",
        str(key),
    )

    assert result.returncode == 1
    assert "cannot write the anchor" in result.stderr


def test_database_problems_are_one_line_errors(tmp_path: Path) -> None:
    not_postgres = run_cli("mysql://somewhere/db", "verify", "--all")
    unreachable = run_cli(NO_DATABASE, "verify", "--all")
    missing_file = run_cli(NO_DATABASE, "verify", "--file", str(tmp_path / "missing.json"))

    assert not_postgres.returncode == 2 and "is not a PostgreSQL URL" in not_postgres.stderr
    assert unreachable.returncode == 7 and "cannot reach the database" in unreachable.stderr
    assert missing_file.returncode == 2 and "cannot read" in missing_file.stderr


def test_an_unmigrated_database_says_so(postgres_server_url: str) -> None:
    with fresh_database(postgres_server_url) as url:
        result = run_cli(url, "verify", "--all")

    assert result.returncode == 7
    assert "run `governance migrate` first" in result.stderr


def test_an_export_that_cannot_be_written_is_an_error(
    governance: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    request_id = approved_request(conn)

    result = governance("export", request_id, "--out", str(tmp_path / "no-dir" / "x.json"))

    assert result.returncode == 1
    assert "cannot write" in result.stderr
