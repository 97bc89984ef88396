"""``governance verify`` as a real process against forged histories: exit 6, each finding
naming the request, the revision and what differs; and ``verify --file`` saying whether the
export's keys were checked against a trusted set.

Histories are forged in a private database per test, as whoever holds the worker's database
role (or the database itself) could (see ``tests/integration/test_forged_histories.py``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import migrated_database
from tests.integration.test_forged_histories import (
    grant_forged_from_rejection,
    pending_group_request,
    trusted_set,
)
from tests.support import identities
from tests.support.commands import command, new_id, submit
from tests.support.forgery import as_worker_role
from tests.support.services import owner_bypassing_guards
from tests.support.signed import apply_command
from tests.system.test_audit_cli import NO_DATABASE, altered_lines, run_cli

pytestmark = pytest.mark.system


@pytest.fixture
def url(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url) as database_url:
        yield database_url


@pytest.fixture
def owner(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def test_a_status_set_by_the_owner_exits_6_naming_the_request_revision_and_status(
    owner: psycopg.Connection[Any], url: str
) -> None:
    # Given a pending request the owner sets approved with the guards off
    request_id = pending_group_request(owner, url)
    with owner_bypassing_guards(owner):
        owner.execute(
            "UPDATE mutation_requests SET status = 'approved', pending_reason = NULL"
            " WHERE request_id = %s",
            (request_id,),
        )

    # When it is verified
    result = run_cli(url, "verify", request_id)

    # Then it exits 6, naming the request, the revision and the status
    assert result.returncode == 6, result.stdout + result.stderr
    assert (
        f"altered: request {request_id}, revision 1: the stored request's status is "
        "'approved', re-execution gives 'pending'"
    ) in altered_lines(result)


def test_a_signed_rejection_kept_as_an_approval_exits_6_naming_the_revision(
    owner: psycopg.Connection[Any], url: str
) -> None:
    # Given, as the worker role, the approver's signed rejection kept as the proof of a grant
    # and an approval
    request_id = pending_group_request(owner, url)
    with as_worker_role(owner, url) as worker:
        rejection = grant_forged_from_rejection(worker, request_id)

    # When it is verified
    result = run_cli(url, "verify", request_id)

    # Then it exits 6, naming the request, the revision, the command and what differs
    assert result.returncode == 6, result.stdout + result.stderr
    [line] = altered_lines(result)
    assert line.startswith(
        f"altered: request {request_id}, revision 2 (command {rejection['command_id']}): "
        "decision 2/1 differs: "
    )
    assert "type is 'granted', re-execution gives 'rejected'" in line


def exported(owner: psycopg.Connection[Any], url: str, tmp_path: Path) -> Path:
    """An approved request exported to a file by ``governance export``."""
    request_id = new_id()
    assert apply_command(owner, submit(request_id, initial_status="pending")).applied
    assert apply_command(owner, command("approve", request_id, 1)).applied
    path = tmp_path / "export.json"
    result = run_cli(url, "export", request_id, "--out", str(path))
    assert result.returncode == 0, result.stderr
    return path


def keys_file(tmp_path: Path, *actor_ids: str) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(list(trusted_set(*actor_ids).values())), encoding="utf-8")
    return path


def keys_line(result: subprocess.CompletedProcess[str]) -> str:
    [line] = [line for line in result.stderr.splitlines() if line.startswith("keys: ")]
    return line


def test_verify_file_says_its_keys_were_only_taken_from_the_export(
    owner: psycopg.Connection[Any], url: str, tmp_path: Path
) -> None:
    path = exported(owner, url, tmp_path)

    result = run_cli(NO_DATABASE, "verify", "--file", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert keys_line(result) == (
        "keys: taken from the export only, not checked against a trusted set (give --keys FILE)"
    )


def test_verify_file_with_keys_says_they_were_checked_against_the_trusted_set(
    owner: psycopg.Connection[Any], url: str, tmp_path: Path
) -> None:
    path = exported(owner, url, tmp_path)
    trusted = keys_file(tmp_path, "submitter", "operator")

    result = run_cli(NO_DATABASE, "verify", "--file", str(path), "--keys", str(trusted))

    assert result.returncode == 0, result.stdout + result.stderr
    assert keys_line(result) == f"keys: checked against the trusted key set {trusted}"


def test_verify_file_with_a_trusted_set_lacking_a_key_exits_6_naming_it(
    owner: psycopg.Connection[Any], url: str, tmp_path: Path
) -> None:
    path = exported(owner, url, tmp_path)
    trusted = keys_file(tmp_path, "submitter")

    result = run_cli(NO_DATABASE, "verify", "--file", str(path), "--keys", str(trusted))

    operator = identities.key_for("operator").key_id
    assert result.returncode == 6, result.stdout + result.stderr
    assert any(
        f"key {operator} of 'operator' is not in the trusted key set" in line
        for line in altered_lines(result)
    )
    assert keys_line(result) == f"keys: checked against the trusted key set {trusted}"
