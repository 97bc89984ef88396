"""``governance keygen`` and ``governance actors`` as real processes against a real database,
with their exit codes and output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from producer.keys import load_key_file
from tests.support.commands import new_id
from tests.support.database_logins import reader_login_url
from tests.support.processes import PROJECT_ROOT, service_env
from tests.support.services import fresh_database

pytestmark = pytest.mark.system


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=PROJECT_ROOT,
        env=service_env(database_url, "amqp://unused//"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def governance(database_url: str) -> Any:
    """Run ``governance ARGS...`` on the test database; returns the completed process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(database_url, *args)

    return run


def keygen(governance: Any, tmp_path: Path, actor_id: str) -> tuple[str, Path]:
    """A new key file for ``actor_id``, and its public key as keygen printed it."""
    path = tmp_path / f"{actor_id}-{new_id('k')}.key"
    result = governance("keygen", "--actor", actor_id, "--out", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), path


def test_keygen_writes_the_key_file_and_prints_its_public_key(
    governance: Any, tmp_path: Path
) -> None:
    # When a key is generated for alice
    path = tmp_path / "alice.key"
    result = governance("keygen", "--actor", "alice", "--out", str(path))

    # Then the key file holds it, for the owner's eyes only, and stdout is its public key
    assert result.returncode == 0, result.stderr
    key = load_key_file(path)
    assert result.stdout == f"{key.public_key_b64}\n"
    assert f"key id {key.key_id} of actor alice" in result.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set(json.loads(path.read_text(encoding="utf-8"))) == {
        "actor_id",
        "key_id",
        "private_key",
    }

    # And a second keygen never overwrites it
    again = governance("keygen", "--actor", "alice", "--out", str(path))
    assert again.returncode == 1
    assert "already exists" in again.stderr and str(path) in again.stderr
    assert load_key_file(path) == key


def test_keygen_as_json_with_a_chosen_key_id(governance: Any, tmp_path: Path) -> None:
    path = tmp_path / "bob.key"

    result = governance(
        "keygen", "--actor", "bob", "--out", str(path), "--key-id", "bob-1", "--json"
    )

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    key = load_key_file(path)
    assert printed == {
        "actor_id": "bob",
        "key_id": "bob-1",
        "public_key": key.public_key_b64,
        "file": str(path),
    }


def test_keygen_for_an_impossible_actor_id_is_a_usage_error(
    governance: Any, tmp_path: Path
) -> None:
    path = tmp_path / "blank.key"

    result = governance("keygen", "--actor", "  ", "--out", str(path))

    assert result.returncode == 2
    assert "actor_id must not be blank" in result.stderr
    assert not path.exists()


def test_an_actor_is_added_listed_shown_rekeyed_and_revoked(
    governance: Any, tmp_path: Path
) -> None:
    # Given a key made for a new actor
    actor_id = new_id("alice")
    public_key, key_file = keygen(governance, tmp_path, actor_id)
    key_id = load_key_file(key_file).key_id

    # When the actor is registered with it, two roles and two groups
    added = governance(
        "actors", "add", actor_id, "--name", "Alice", "--type", "user",
        "--role", "approver", "--role", "requester", "--group", "cab", "--group", "ops",
        "--public-key", public_key,
    )  # fmt: skip

    # Then it is registered under the key file's key id
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"added actor {actor_id} (user; roles approver,requester;")
    assert key_id in added.stdout
    shown = json.loads(governance("actors", "show", actor_id, "--json").stdout)
    assert {k: shown[k] for k in ("actor_id", "name", "type", "roles", "groups", "active")} == {
        "actor_id": actor_id,
        "name": "Alice",
        "type": "user",
        "roles": ["approver", "requester"],
        "groups": ["cab", "ops"],
        "active": True,
    }
    assert [(k["key_id"], k["public_key"], k["revoked_at"]) for k in shown["keys"]] == [
        (key_id, public_key, None)
    ]

    # When a second key is added (rotation) and the first revoked
    second_key, _ = keygen(governance, tmp_path, actor_id)
    rotated = governance(
        "actors", "key", "add", actor_id, "--public-key", second_key, "--key-id", f"{actor_id}-2"
    )
    revoked = governance("actors", "key", "revoke", key_id)

    # Then both are shown, the first one revoked
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout == f"added key {actor_id}-2 to actor {actor_id}\n"
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked key {key_id} of actor {actor_id} at ")
    text = governance("actors", "show", actor_id)
    assert text.returncode == 0, text.stderr
    assert f"actor:   {actor_id}" in text.stdout
    assert "roles:   approver,requester" in text.stdout
    key_lines = [line for line in text.stdout.splitlines() if key_id in line or "-2 " in line]
    assert len(key_lines) == 2
    assert "revoked" in key_lines[0] and key_lines[1].rstrip().endswith("active")

    # And the listing has it, as text and as JSON lines
    listed = governance("actors", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(actor_id))
    assert row.split() == [actor_id, "Alice", "user", "approver,requester", "cab,ops", "yes", "1/2"]
    as_json = governance("actors", "list", "--json")
    documents = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert next(d for d in documents if d["actor_id"] == actor_id)["keys"][0]["revoked_at"]

    # And revoking it again is refused
    again = governance("actors", "key", "revoke", key_id)
    assert again.returncode == 1
    assert "already revoked" in again.stderr


def test_deactivating_and_activating_an_actor(governance: Any) -> None:
    actor_id = new_id("svc")
    assert governance("actors", "add", actor_id, "--type", "service").returncode == 0

    shown = governance("actors", "show", actor_id)
    assert "keys:    none (the actor cannot sign commands)" in shown.stdout
    assert governance("actors", "deactivate", actor_id).stdout == f"deactivated actor {actor_id}\n"
    assert json.loads(governance("actors", "show", actor_id, "--json").stdout)["active"] is False
    assert governance("actors", "activate", actor_id).returncode == 0
    assert json.loads(governance("actors", "show", actor_id, "--json").stdout)["active"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["actors", "add", "system", "--type", "system"], "internal to the worker"),
        (["actors", "add", "{new}", "--public-key", "not-a-key"], "public key"),
        (["actors", "add", "{new}", "--public-key", "QUJD"], "must decode to 32 bytes"),
        (["actors", "add", "{new}", "--role", "root"], "'root' is not one of"),
        (["actors", "add", "{new}", "--type", "robot"], "'robot' is not one of"),
        (["actors", "add", "{new}", "--group", ""], "group must not be blank"),
        (["actors", "add", "{new}", "--key-id", "k1"], "a key id needs the public key"),
        (["actors", "key", "add", "{new}", "--public-key", "+" * 43], "not base64url"),
        (["actors", "add"], "Missing argument"),
    ],
)
def test_invalid_input_is_a_usage_error(governance: Any, args: list[str], message: str) -> None:
    actor_id = new_id("bad")

    result = governance(*[arg.replace("{new}", actor_id) for arg in args])

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert governance("actors", "show", actor_id).returncode == 1


def test_conflicts_and_unknown_names_exit_1(governance: Any) -> None:
    actor_id = new_id("dup")
    assert governance("actors", "add", actor_id).returncode == 0

    for args, message in (
        (["actors", "add", actor_id], "already exists"),
        (["actors", "show", new_id("ghost")], "unknown actor"),
        (["actors", "key", "revoke", new_id("nokey")], "unknown key"),
        (["actors", "deactivate", new_id("ghost")], "unknown actor"),
    ):
        result = governance(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_a_database_without_the_schema_says_to_migrate(postgres_server_url: str) -> None:
    with fresh_database(postgres_server_url) as url:
        result = run_cli(url, "actors", "list")

    assert result.returncode == 7
    assert "run `governance migrate` first" in result.stderr


def test_a_bad_or_unreachable_database_is_a_one_line_error() -> None:
    bad = run_cli("mysql://nowhere/db", "actors", "list")
    unreachable = run_cli("postgresql://postgres@127.0.0.1:1/none", "actors", "show", "alice")

    assert bad.returncode == 2
    assert "is not a PostgreSQL URL" in bad.stderr
    assert unreachable.returncode == 7
    assert "cannot reach the database" in unreachable.stderr
    assert "Traceback" not in bad.stderr + unreachable.stderr


def test_a_login_without_write_access_to_the_registry_is_told_so(database_url: str) -> None:
    # Given a login that is a member of the database's reader role only
    url = reader_login_url(database_url)

    # When it reads and then tries to register an actor
    listed = run_cli(url, "actors", "list")
    added = run_cli(url, "actors", "add", new_id("mallory"), "--role", "operator")

    # Then it may read, and the database refused the write
    assert listed.returncode == 0, listed.stderr
    assert added.returncode == 1
    assert "may not change the registry: permission denied" in added.stderr


def test_worker_key_makes_and_registers_a_worker_key_once(governance: Any, tmp_path: Path) -> None:
    # Given no key file and no such actor
    actor_id = new_id("worker")
    path = tmp_path / "worker.key"

    # When the provisioning step runs twice
    first = governance("actors", "worker-key", str(path), "--actor", actor_id)
    second = governance("actors", "worker-key", str(path), "--actor", actor_id)

    # Then the first made the file and registered the actor with the worker role and its key,
    # and the second found both done
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    key = load_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = json.loads(governance("actors", "show", actor_id, "--json").stdout)
    assert (shown["type"], shown["roles"]) == ("service", ["worker"])
    assert [k["public_key"] for k in shown["keys"]] == [key.public_key_b64]
    assert "already has key" in second.stdout


def test_worker_key_refuses_an_existing_actor_without_the_worker_role(
    governance: Any, tmp_path: Path
) -> None:
    actor_id = new_id("not-a-worker")
    assert governance("actors", "add", actor_id, "--role", "operator").returncode == 0

    result = governance("actors", "worker-key", str(tmp_path / "w.key"), "--actor", actor_id)

    assert result.returncode == 1
    assert "without the worker role" in result.stderr


def test_a_worker_is_registered_by_hand_with_the_worker_role(
    governance: Any, tmp_path: Path
) -> None:
    # Given a key made for a worker
    actor_id = new_id("worker")
    public_key, _ = keygen(governance, tmp_path, actor_id)

    # When it is registered as the README says
    added = governance(
        "actors", "add", actor_id, "--type", "service", "--role", "worker",
        "--public-key", public_key,
    )  # fmt: skip

    # Then the actor is a service holding the worker role, with that key
    assert added.returncode == 0, added.stderr
    shown = json.loads(governance("actors", "show", actor_id, "--json").stdout)
    assert (shown["type"], shown["roles"]) == ("service", ["worker"])
    assert [k["public_key"] for k in shown["keys"]] == [public_key]
