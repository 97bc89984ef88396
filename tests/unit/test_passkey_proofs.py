"""A passkey-signed command (``auth.scheme = "webauthn"``) is proved by its assertion:
every check the worker and ``governance verify`` run, each refusal naming its check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from governance.authentication import KeyRecord, Policy, authenticate
from governance.commands import parse_command
from governance.model import ActorType
from governance.passkeys import DEFAULT_ORIGIN, command_challenge, origins_from, usable_key
from governance.proof import signed_bytes
from governance.rules import Rejection, RejectionCode
from governance.trust import Principal
from tests.support.passkeys import EDDSA, ES256, UP, UV, SoftPasskey

from .builders import command_payload

APPROVER = "alice"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
POLICY = Policy("governance", timedelta(hours=24), frozenset({DEFAULT_ORIGIN}))
PRINCIPAL = Principal(APPROVER, "Alice", ActorType.USER, frozenset({"approver"}), frozenset(), True)


def approval() -> dict[str, Any]:
    payload = command_payload(
        "approve_requirement", actor_id=APPROVER, command_id="cmd-passkey", approval_id="ap-1"
    )
    payload["issued_at"] = "2026-12-07T11:59:00Z"
    return payload


def record_of(passkey: SoftPasskey, **overrides: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "key_id": passkey.credential_id,
        "actor_id": passkey.actor_id,
        "public_key": passkey.cose_key,
        "revoked_at": None,
        "scheme": "webauthn",
        "algorithm": passkey.algorithm,
        **overrides,
    }
    return KeyRecord(**fields)


def judged(
    signed: dict[str, Any], key: KeyRecord, policy: Policy = POLICY
) -> Rejection | Principal:
    return authenticate(signed, parse_command(signed), key, PRINCIPAL, policy, NOW)


def refusal(signed: dict[str, Any], key: KeyRecord, policy: Policy = POLICY) -> str:
    outcome = judged(signed, key, policy)
    assert isinstance(outcome, Rejection), "expected the proof to be refused"
    assert outcome.code is RejectionCode.UNAUTHENTICATED
    return outcome.message


@pytest.mark.parametrize("algorithm", [ES256, EDDSA], ids=["ES256", "EdDSA"])
def test_an_assertion_over_the_command_with_user_verification_proves_its_actor(
    algorithm: int,
) -> None:
    passkey = SoftPasskey(APPROVER, algorithm)
    assert judged(passkey.sign(approval()), record_of(passkey)) == PRINCIPAL


def test_the_challenge_is_the_sha256_of_the_canonical_command_without_auth() -> None:
    import hashlib

    signed = SoftPasskey(APPROVER).sign(approval())
    assert command_challenge(signed) == hashlib.sha256(signed_bytes(signed)).digest()
    assert command_challenge(signed) == command_challenge({**signed, "auth": {"x": 1}})


def test_a_command_altered_after_it_was_signed_is_refused_as_another_command() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval())
    signed["reason"] = "changed by whoever relayed it"
    assert "clientDataJSON.challenge" in refusal(signed, record_of(passkey))


def test_an_assertion_over_another_command_is_refused_naming_the_challenge() -> None:
    passkey = SoftPasskey(APPROVER)
    other = {**approval(), "command_id": "cmd-another"}
    signed = passkey.sign(approval(), over=other)
    assert "over another command" in refusal(signed, record_of(passkey))


def test_an_assertion_from_another_origin_is_refused_naming_the_origin() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval(), origin="https://console.attacker.example")
    message = refusal(signed, record_of(passkey))
    assert "clientDataJSON.origin 'https://console.attacker.example'" in message
    assert "GOVERNANCE_WEBAUTHN_ORIGINS" in message


def test_an_assertion_for_another_relying_party_is_refused_naming_the_rp_id_hash() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval(), rp_id="attacker.example")
    assert "rpIdHash" in refusal(signed, record_of(passkey))


def test_an_assertion_without_user_verification_is_refused_naming_the_uv_flag() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval(), flags=UP)
    assert "user-verified flag (UV)" in refusal(signed, record_of(passkey))


def test_an_assertion_without_user_presence_is_refused_naming_the_up_flag() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval(), flags=UV)
    assert "user-present flag (UP)" in refusal(signed, record_of(passkey))


def test_a_registration_ceremony_is_no_assertion() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval(), type_="webauthn.create")
    assert "clientDataJSON.type is 'webauthn.create'" in refusal(signed, record_of(passkey))


def test_a_signature_by_another_passkey_does_not_verify_with_the_registered_key() -> None:
    registered, other = SoftPasskey(APPROVER), SoftPasskey(APPROVER)
    signed = other.sign(approval())
    signed["auth"]["key_id"] = registered.credential_id
    assert "the passkey signature does not verify" in refusal(signed, record_of(registered))


def test_a_passkey_proof_naming_an_ed25519_key_is_refused_naming_the_schemes() -> None:
    passkey = SoftPasskey(APPROVER)
    key = record_of(passkey, scheme="ed25519", algorithm=None)
    assert "is a ed25519 key, the command's auth.scheme is webauthn" in refusal(
        passkey.sign(approval()), key
    )


def test_an_ed25519_proof_naming_a_passkey_is_refused_naming_the_schemes() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval())
    signed["auth"] = {"key_id": passkey.credential_id, "signature": signed["auth"]["signature"]}
    assert "is a webauthn key, the command's auth.scheme is ed25519" in refusal(
        signed, record_of(passkey)
    )


def test_an_unknown_scheme_is_refused() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval())
    signed["auth"]["scheme"] = "password"
    assert "unknown scheme 'password'" in refusal(signed, record_of(passkey))


def test_the_deployment_checks_still_apply_to_a_passkey_proof() -> None:
    passkey = SoftPasskey(APPROVER)
    signed = passkey.sign(approval(), audience="staging")
    assert "wrong audience" in refusal(signed, record_of(passkey))


def test_a_revoked_passkey_is_refused() -> None:
    passkey = SoftPasskey(APPROVER)
    key = record_of(passkey, revoked_at=NOW - timedelta(minutes=1))
    assert "was revoked" in refusal(passkey.sign(approval()), key)


def test_a_deployment_accepts_each_of_its_origins() -> None:
    passkey = SoftPasskey(APPROVER)
    policy = Policy(
        "governance",
        timedelta(hours=24),
        origins_from("https://approve.example.org, http://localhost:8080"),
    )
    signed = passkey.sign(approval(), origin="https://approve.example.org")
    assert judged(signed, record_of(passkey), policy) == PRINCIPAL


def test_an_origins_setting_refuses_what_is_not_an_origin() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        origins_from("https://approve.example.org/console")


def test_a_registered_passkey_key_must_match_its_algorithm() -> None:
    passkey = SoftPasskey(APPROVER, ES256)
    assert usable_key(passkey.cose_key, ES256) is None
    assert "not -8" in (usable_key(passkey.cose_key, EDDSA) or "")
    assert "not one of" in (usable_key(passkey.cose_key, -257) or "")
