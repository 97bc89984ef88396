"""Authentication in two parts: whether a signature proves its signer (what no later change
can make good), and whether the proved signer may act now (what may change: the actor's
activity, the clock catching up with ``issued_at``). The worker records refusals of the
second kind only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from governance.authentication import (
    DEFAULT_AUDIENCE,
    DEFAULT_MAX_AGE,
    MAX_CLOCK_SKEW,
    KeyRecord,
    Policy,
    authenticate,
    prove_signer,
    refuse_standing,
)
from governance.commands import parse_command
from governance.model import ActorType
from governance.rules import Rejection
from governance.trust import Principal
from producer.keys import SigningKey
from producer.signing import sign_command

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
KEY = SigningKey(actor_id="alice", key_id="alice-1", seed=bytes(32))
POLICY = Policy(DEFAULT_AUDIENCE, DEFAULT_MAX_AGE)
RECORD = KeyRecord("alice-1", "alice", KEY.public_key_b64, None)


def alice(*, active: bool = True) -> Principal:
    return Principal("alice", "Alice", ActorType.USER, frozenset({"approver"}), frozenset(), active)


def signed(issued_at: datetime = NOW) -> dict[str, object]:
    payload = {
        "command_id": "c-1",
        "type": "approve",
        "request_id": "req-1",
        "expected_revision": 1,
        "actor": {"id": "alice"},
    }
    return sign_command(payload, KEY, audience=DEFAULT_AUDIENCE, issued_at=issued_at)


def test_a_deactivated_actor_s_valid_signature_proves_it_but_it_may_not_act() -> None:
    payload = signed()
    command = parse_command(payload)
    proved = prove_signer(payload, command, RECORD, alice(active=False), POLICY, NOW)
    assert isinstance(proved, Principal)
    refused = refuse_standing(command, proved, NOW)
    assert refused is not None and "not active" in refused.message
    assert authenticate(payload, command, RECORD, alice(active=False), POLICY, NOW) == refused


def test_a_command_issued_ahead_of_the_clock_proves_its_signer_but_waits_for_the_clock() -> None:
    payload = signed(NOW + MAX_CLOCK_SKEW + timedelta(seconds=1))
    command = parse_command(payload)
    proved = prove_signer(payload, command, RECORD, alice(), POLICY, NOW)
    assert isinstance(proved, Principal)
    refused = refuse_standing(command, proved, NOW)
    assert refused is not None and "in the future" in refused.message
    assert refuse_standing(command, proved, NOW + timedelta(seconds=1)) is None


def test_a_revoked_key_proves_nobody() -> None:
    payload = signed()
    revoked = KeyRecord("alice-1", "alice", KEY.public_key_b64, NOW - timedelta(minutes=1))
    refused = prove_signer(payload, parse_command(payload), revoked, alice(), POLICY, NOW)
    assert isinstance(refused, Rejection) and "revoked" in refused.message


def test_an_expired_command_proves_nobody() -> None:
    payload = signed(NOW - DEFAULT_MAX_AGE - timedelta(seconds=1))
    refused = prove_signer(payload, parse_command(payload), RECORD, alice(), POLICY, NOW)
    assert isinstance(refused, Rejection) and "expired" in refused.message
