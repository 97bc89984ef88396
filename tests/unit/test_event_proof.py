"""Judging an outcome event by its worker's signature (producer.event_proof)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785

from governance.proof import b64url_encode, event_signed_bytes
from producer.event_proof import (
    BAD_SIGNATURE,
    MALFORMED,
    REVOKED_KEY,
    UNKNOWN_KEY,
    UNSIGNED,
    EventVerifier,
    TrustedKey,
    load_keys_file,
)
from producer.keys import SigningKey
from producer.signing import sign_event

WORKER = SigningKey("worker-1", "worker-1-key", bytes(range(32)))
OTHER = SigningKey("mallory", "mallory-key", bytes(range(1, 33)))
OCCURRED = "2026-12-01T10:00:00Z"


def event(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": "ev-1",
        "event_type": "transition.applied",
        "sequence": 12,
        "occurred_at": OCCURRED,
        "command_id": "c-1",
        "request_id": "req-1",
        "authenticated": True,
        "to_status": "approved",
        "revision": 2,
        **changes,
    }


def trusted(key: SigningKey = WORKER, revoked_at: datetime | None = None) -> TrustedKey:
    return TrustedKey(key.key_id, key.public_key_bytes, key.actor_id, revoked_at)


def verifier(*keys: TrustedKey, require_signed: bool = True) -> EventVerifier:
    return EventVerifier.trusting(keys or [trusted()], require_signed=require_signed)


def test_the_signature_covers_the_rfc_8785_json_of_the_event_without_its_proof() -> None:
    signed = sign_event(event(), WORKER)

    assert signed["proof"]["key_id"] == WORKER.key_id
    assert event_signed_bytes(signed) == rfc8785.dumps(event())


def test_an_event_signed_by_a_trusted_worker_key_is_accepted_as_verified() -> None:
    verdict = verifier().check(sign_event(event(), WORKER))

    assert (verdict.accepted, verdict.verified) == (True, True)


def test_a_signed_event_verifies_whatever_its_key_order_and_spacing() -> None:
    signed = sign_event(event(), WORKER)
    respelled = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=3))

    assert verifier().check(respelled).accepted


def test_an_altered_signed_event_is_refused() -> None:
    forged = {**sign_event(event(to_status="pending"), WORKER), "to_status": "approved"}

    assert verifier().check(forged).reason == BAD_SIGNATURE


def test_an_event_whose_sequence_was_changed_is_refused() -> None:
    replayed = {**sign_event(event(), WORKER), "sequence": 99}

    assert verifier().check(replayed).reason == BAD_SIGNATURE


def test_an_event_signed_by_a_key_that_is_not_trusted_is_refused() -> None:
    assert verifier().check(sign_event(event(), OTHER)).reason == UNKNOWN_KEY


def test_a_proof_naming_a_trusted_key_but_signed_by_another_is_refused() -> None:
    forged = sign_event(event(), SigningKey(WORKER.actor_id, WORKER.key_id, OTHER.seed))

    assert verifier().check(forged).reason == BAD_SIGNATURE


def test_an_unsigned_event_is_refused_in_signed_mode() -> None:
    assert verifier().check(event()).reason == UNSIGNED
    assert verifier().check(event(proof=None)).reason == UNSIGNED


def test_an_unsigned_event_that_says_it_is_unauthenticated_is_accepted_in_development_mode() -> (
    None
):
    verdict = verifier(require_signed=False).check(event(authenticated=False, proof=None))

    assert (verdict.accepted, verdict.verified) == (True, False)


def test_an_unsigned_event_claiming_authentication_is_refused_even_in_development_mode() -> None:
    assert verifier(require_signed=False).check(event(proof=None)).reason == UNSIGNED


def test_a_signed_event_is_verified_in_development_mode_too() -> None:
    forged = {**sign_event(event(authenticated=False), WORKER), "to_status": "rejected"}

    assert verifier(require_signed=False).check(forged).reason == BAD_SIGNATURE


def test_a_malformed_proof_is_refused() -> None:
    for proof in ("sig", {"key_id": WORKER.key_id}, {"key_id": 1, "signature": "x"}):
        assert verifier().check(event(proof=proof)).reason == MALFORMED
    short = {"key_id": WORKER.key_id, "signature": b64url_encode(b"x" * 10)}
    assert verifier().check(event(proof=short)).reason == MALFORMED


def test_a_live_event_signed_with_a_revoked_key_is_refused_whatever_its_time() -> None:
    revoked = trusted(revoked_at=datetime(2026, 12, 2, tzinfo=UTC))

    # occurred_at (Dec 1) is before the revocation: a thief could back-date it
    assert verifier(revoked).check(sign_event(event(), WORKER)).reason == REVOKED_KEY


def test_an_event_from_the_log_signed_before_its_key_was_revoked_still_verifies() -> None:
    revoked = trusted(revoked_at=datetime(2026, 12, 2, tzinfo=UTC))

    assert verifier(revoked).check(sign_event(event(), WORKER), live=False).verified


def test_an_event_from_the_log_signed_after_its_key_was_revoked_is_refused() -> None:
    revoked = trusted(revoked_at=datetime(2026, 12, 1, 9, tzinfo=UTC))

    verdict = verifier(revoked).check(sign_event(event(), WORKER), live=False)

    assert verdict.reason == REVOKED_KEY


def test_admit_counts_what_it_lets_through_and_what_it_refuses_by_reason() -> None:
    judge = verifier()

    admitted = [
        judge.admit(sign_event(event(), WORKER)),
        judge.admit(event()),
        judge.admit(sign_event(event(), OTHER)),
        judge.admit(sign_event(event(), OTHER)),
    ]

    assert admitted == [True, False, False, False]
    assert judge.verified == 1
    assert dict(judge.refused) == {UNSIGNED: 1, UNKNOWN_KEY: 2}
    assert judge.refused_total == 3


def test_a_key_registered_after_the_verifier_started_is_trusted_on_its_first_event() -> None:
    registry: list[TrustedKey] = []
    judge = EventVerifier(lambda: list(registry), refresh_seconds=0)
    assert judge.check(sign_event(event(), WORKER)).reason == UNKNOWN_KEY

    registry.append(trusted())

    assert judge.check(sign_event(event(), WORKER)).verified


def test_unknown_keys_reread_the_trusted_set_at_most_once_per_interval() -> None:
    reads: list[int] = []

    def keys() -> list[TrustedKey]:
        reads.append(1)
        return [trusted()]

    judge = EventVerifier(keys, refresh_seconds=3600)
    for _ in range(50):
        judge.check(sign_event(event(), OTHER))

    assert len(reads) == 1


def test_trusted_keys_are_read_from_a_file_of_public_keys(tmp_path: Path) -> None:
    path = tmp_path / "event-keys.json"
    path.write_text(
        json.dumps([{"key_id": WORKER.key_id, "public_key": WORKER.public_key_b64}]),
        encoding="utf-8",
    )

    judge = EventVerifier.trusting(load_keys_file(path))

    assert judge.check(sign_event(event(), WORKER)).verified


def test_the_environment_names_a_trusted_keys_file_and_the_trust_mode(tmp_path: Path) -> None:
    path = tmp_path / "event-keys.json"
    path.write_text(
        json.dumps({"keys": [{"key_id": WORKER.key_id, "public_key": WORKER.public_key_b64}]}),
        encoding="utf-8",
    )

    judge = EventVerifier.from_environment(
        environ={"GOVERNANCE_EVENT_KEYS": str(path), "GOVERNANCE_AUTH": "off"}
    )

    assert judge.check(sign_event(event(), WORKER)).verified
    assert judge.check(event(authenticated=False, proof=None)).accepted
    assert judge.require_signed is False


def test_a_revocation_time_in_a_keys_file_is_read() -> None:
    key = TrustedKey.from_dict(
        {
            "key_id": WORKER.key_id,
            "public_key": WORKER.public_key_b64,
            "revoked_at": (datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=1)).isoformat(),
        }
    )

    assert key.revoked_at == datetime(2026, 12, 1, 1, tzinfo=UTC)


def test_an_event_is_refused_while_the_trusted_keys_cannot_be_read() -> None:
    def unreachable() -> list[TrustedKey]:
        raise OSError("connection refused")

    judge = EventVerifier(unreachable, refresh_seconds=0)

    assert judge.check(sign_event(event(), WORKER)).reason == UNKNOWN_KEY


def test_unreadable_trusted_keys_are_tried_again_at_most_once_per_interval() -> None:
    attempts: list[int] = []

    def unreachable() -> list[TrustedKey]:
        attempts.append(1)
        raise OSError("connection refused")

    judge = EventVerifier(unreachable, refresh_seconds=3600)
    for _ in range(20):
        judge.check(sign_event(event(), WORKER))

    assert len(attempts) == 1
