"""Signing keys in their key files, and commands signed with them."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.proof import b64url_decode, b64url_encode, signed_bytes
from producer.keys import (
    KeyFileError,
    SigningKey,
    default_key_id,
    generate,
    load_key_file,
    load_public_key,
    write_key_file,
)
from producer.signing import sign_command

from .builders import submit_payload


def public_key_of(key: SigningKey) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(b64url_decode(key.public_key_b64))


def write_json(path: Path, document: Any) -> Path:
    """A key file as keygen writes it: readable by its owner only."""
    path.write_text(json.dumps(document), encoding="utf-8")
    path.chmod(0o600)
    return path


def test_a_written_key_file_loads_back_to_the_same_key(tmp_path: Path) -> None:
    # Given a new key for alice
    key = generate("alice")

    # When it is written to a key file and read back
    path = tmp_path / "alice.key"
    write_key_file(key, path)
    loaded = load_key_file(path)

    # Then it is the same key, in the documented format, readable by its owner only
    assert loaded == key
    assert loaded.public_key_b64 == key.public_key_b64
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document == {
        "actor_id": "alice",
        "key_id": key.key_id,
        "private_key": b64url_encode(key.seed),
    }
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_default_key_id_is_the_start_of_the_public_keys_digest() -> None:
    key = generate("alice")

    assert key.key_id == default_key_id(key.public_key_bytes)
    assert len(key.key_id) == 16
    assert len(key.public_key_b64) == 43
    assert len(b64url_decode(key.public_key_b64)) == 32


def test_a_chosen_key_id_is_kept() -> None:
    assert generate("alice", "alice-2026").key_id == "alice-2026"


def test_a_key_never_shows_its_seed_in_its_repr() -> None:
    key = generate("alice")

    assert b64url_encode(key.seed) not in repr(key)
    assert key.seed.hex() not in repr(key)


@pytest.mark.parametrize("actor_id", ["", "   ", "a\x00b", "tab\there", "x" * 129])
def test_a_key_for_an_impossible_actor_id_is_refused(actor_id: str) -> None:
    with pytest.raises(ValueError, match="actor_id"):
        generate(actor_id)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("alice", "k1", b"short"), "exactly 32 bytes"),
        (("alice", "k1", "x" * 32), "exactly 32 bytes"),
        ((7, "k1", bytes(32)), "actor_id must be a string"),
        (("alice", "", bytes(32)), "key_id must not be blank"),
    ],
)
def test_an_impossible_key_is_refused(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SigningKey(*arguments)


def test_a_key_file_that_fails_half_way_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file system that fails while the key file is written
    def failing_fchmod(fd: int, mode: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fchmod", failing_fchmod)
    path = tmp_path / "alice.key"

    # When a key is written there
    with pytest.raises(KeyFileError, match="cannot write it: No space left") as raised:
        write_key_file(generate("alice"), path)

    # Then the error names the file, and no half-written file remains
    assert str(path) in str(raised.value)
    assert not path.exists()


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    # Given a key file
    path = tmp_path / "alice.key"
    first = generate("alice")
    write_key_file(first, path)

    # When another key is written to the same path
    with pytest.raises(KeyFileError, match="already exists") as raised:
        write_key_file(generate("alice"), path)

    # Then the first key is still there, and the error names the file
    assert str(path) in str(raised.value)
    assert load_key_file(path) == first


def test_a_key_file_that_cannot_be_created_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-directory" / "alice.key"

    with pytest.raises(KeyFileError, match="cannot create") as raised:
        write_key_file(generate("alice"), path)
    assert str(path) in str(raised.value)


GOOD_SEED = b64url_encode(bytes(range(32)))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json at all", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        (json.dumps({"key_id": "k1", "private_key": GOOD_SEED}), "missing field 'actor_id'"),
        (json.dumps({"actor_id": "alice", "private_key": GOOD_SEED}), "missing field 'key_id'"),
        (json.dumps({"actor_id": "alice", "key_id": "k1"}), "missing field 'private_key'"),
        (
            json.dumps({"actor_id": "alice", "key_id": "k1", "private_key": 7}),
            "field 'private_key' must be a string",
        ),
        (
            json.dumps({"actor_id": "alice", "key_id": "k1", "private_key": "no/t+base64"}),
            "not base64url",
        ),
        (
            json.dumps({"actor_id": "alice", "key_id": "k1", "private_key": GOOD_SEED + "="}),
            "not base64url",
        ),
        (
            json.dumps(
                {"actor_id": "alice", "key_id": "k1", "private_key": b64url_encode(b"x" * 31)}
            ),
            "32-byte seed, got 31 bytes",
        ),
        (
            json.dumps(
                {"actor_id": "alice", "key_id": "k1", "private_key": b64url_encode(b"x" * 64)}
            ),
            "32-byte seed, got 64 bytes",
        ),
        (json.dumps({"actor_id": "", "key_id": "k1", "private_key": GOOD_SEED}), "actor_id"),
    ],
)
def test_a_bad_key_file_is_a_key_file_error_naming_the_file(
    tmp_path: Path, content: str | bytes, problem: str
) -> None:
    # Given a file that is not a valid key file
    path = tmp_path / "bad.key"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    path.chmod(0o600)

    # When it is loaded
    with pytest.raises(KeyFileError) as raised:
        load_key_file(path)

    # Then the error names the file and the problem
    assert str(path) in str(raised.value)
    assert problem in str(raised.value)
    assert raised.value.path == str(path)


def test_a_missing_key_file_is_a_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.key"

    with pytest.raises(KeyFileError, match="cannot read") as raised:
        load_key_file(path)
    assert str(path) in str(raised.value)


def test_a_huge_file_is_not_read_as_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.key"
    path.write_bytes(b" " * (65 * 1024))
    path.chmod(0o600)

    with pytest.raises(KeyFileError, match="not a key file"):
        load_key_file(path)


def test_a_key_file_with_extra_fields_still_loads(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "alice.key",
        {"actor_id": "alice", "key_id": "k1", "private_key": GOOD_SEED, "comment": "laptop"},
    )

    assert load_key_file(path) == SigningKey("alice", "k1", bytes(range(32)))


# --- pinned public keys (verify --anchor-key) -------------------------------------------------


def test_a_public_key_is_taken_as_it_is_given() -> None:
    key = generate("operator")

    assert load_public_key(key.public_key_b64) == key.public_key_b64


def test_a_key_file_gives_its_public_half(tmp_path: Path) -> None:
    key = generate("operator")
    write_key_file(key, tmp_path / "operator.key")

    assert load_public_key(str(tmp_path / "operator.key")) == key.public_key_b64


def test_a_file_holding_the_public_key_gives_it(tmp_path: Path) -> None:
    # As `governance keygen ... > operator.pub` leaves it: the key and a newline
    key = generate("operator")
    (tmp_path / "operator.pub").write_text(key.public_key_b64 + "\n", encoding="utf-8")

    assert load_public_key(str(tmp_path / "operator.pub")) == key.public_key_b64


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("not-a-key", id="neither-key-nor-file"),
        pytest.param(b64url_encode(bytes(31)), id="31-bytes"),
        pytest.param(b64url_encode(bytes(32)) + "=", id="padded"),
    ],
)
def test_what_is_neither_a_public_key_nor_a_file_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="neither a base64url Ed25519 public key nor"):
        load_public_key(value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("hello", id="text"),
        pytest.param('{"actor_id": "operator"}', id="json-that-is-no-key-file"),
        pytest.param(b64url_encode(bytes(33)), id="33-bytes"),
    ],
)
def test_a_file_holding_no_key_is_a_key_file_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "operator.pub"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(KeyFileError, match=r"operator\.pub"):
        load_public_key(str(path))


# --- signing --------------------------------------------------------------------------------


def test_a_signed_command_carries_issued_at_audience_and_a_verifiable_signature() -> None:
    # Given alice's key and a command of hers
    key = generate("alice")
    command = submit_payload(actor_id="alice")

    # When it is signed for the staging deployment
    signed = sign_command(command, key, audience="staging")

    # Then it says when and for whom, and the signature verifies over its signed bytes
    assert signed["audience"] == "staging"
    issued = datetime.fromisoformat(signed["issued_at"].replace("Z", "+00:00"))
    assert signed["issued_at"].endswith("Z")
    assert abs(datetime.now(UTC) - issued) < timedelta(minutes=1)
    assert set(signed["auth"]) == {"key_id", "signature"}
    assert signed["auth"]["key_id"] == key.key_id
    signature = b64url_decode(signed["auth"]["signature"])
    public_key_of(key).verify(signature, signed_bytes(signed))
    # And the rest of the command is unchanged
    assert {k: v for k, v in signed.items() if k not in ("auth", "issued_at", "audience")} == (
        command
    )


def test_signing_leaves_the_given_command_alone() -> None:
    key = generate("alice")
    command = submit_payload(actor_id="alice")
    before = json.loads(json.dumps(command))

    signed = sign_command(command, key, audience="governance")
    signed["args"]["state_id"] = "changed"

    assert command == before


def test_a_given_issued_at_is_written_in_utc_wire_form() -> None:
    key = generate("alice")
    when = datetime(2026, 11, 28, 16, 0, tzinfo=timezone(timedelta(hours=2)))

    signed = sign_command(submit_payload(actor_id="alice"), key, audience="a", issued_at=when)

    assert signed["issued_at"] == "2026-11-28T14:00:00Z"


def test_a_naive_issued_at_is_refused() -> None:
    key = generate("alice")

    with pytest.raises(ValueError, match="time zone"):
        sign_command(
            submit_payload(actor_id="alice"), key, audience="a", issued_at=datetime(2026, 1, 1)
        )


def test_any_change_after_signing_breaks_the_signature() -> None:
    # Given a signed approve of revision 3
    key = generate("alice")
    command = submit_payload(actor_id="alice")
    command["expected_revision"] = 3
    signed = sign_command(command, key, audience="governance")
    signature = b64url_decode(signed["auth"]["signature"])

    # When the revision (or the audience) is altered
    for field, value in (("expected_revision", 4), ("audience", "production")):
        altered = {**signed, field: value}

        # Then the signature no longer holds
        with pytest.raises(InvalidSignature):
            public_key_of(key).verify(signature, signed_bytes(altered))


def test_re_signing_replaces_an_earlier_auth_member() -> None:
    key = generate("alice")
    other = generate("alice", "second")
    signed = sign_command(submit_payload(actor_id="alice"), key, audience="governance")

    again = sign_command(signed, other, audience="governance")

    assert again["auth"]["key_id"] == "second"
    public_key_of(other).verify(b64url_decode(again["auth"]["signature"]), signed_bytes(again))


@pytest.mark.parametrize(
    "command",
    [
        submit_payload(actor_id="bob"),
        {"command_id": "c1", "type": "submit"},
        {"command_id": "c1", "type": "submit", "actor": "alice"},
    ],
    ids=["another actor", "no actor", "actor not an object"],
)
def test_a_command_of_another_actor_is_refused(command: dict[str, Any]) -> None:
    key = generate("alice")

    with pytest.raises(ValueError, match="signs for actor 'alice'"):
        sign_command(command, key, audience="governance")


def test_an_empty_audience_is_refused() -> None:
    key = generate("alice")

    with pytest.raises(ValueError, match="audience"):
        sign_command(submit_payload(actor_id="alice"), key, audience="")


def test_a_command_that_cannot_be_canonicalised_is_refused() -> None:
    key = generate("alice")
    command = submit_payload(actor_id="alice", metadata={"big": 2**60})

    with pytest.raises(ValueError, match="canonicalised"):
        sign_command(command, key, audience="governance")


def test_keygen_writes_a_key_file_its_owner_alone_may_read(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"

    write_key_file(generate("alice"), path)

    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_file_others_may_read_is_refused_as_ssh_does(tmp_path: Path, mode: int) -> None:
    # Given a valid key file that group or others may read
    path = tmp_path / "alice.key"
    write_key_file(generate("alice"), path)
    path.chmod(mode)

    # When it is loaded, it is refused naming the file, its mode and the fix
    with pytest.raises(KeyFileError) as raised:
        load_key_file(path)
    assert str(path) in str(raised.value)
    assert f"mode {mode:04o}" in str(raised.value)
    assert "chmod 600" in str(raised.value)
