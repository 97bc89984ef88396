"""Signing a command object for the worker that checks it, and an outcome event for its
subscribers.

The signature covers the RFC 8785 canonical JSON of the command without its ``auth`` member
(:func:`governance.proof.signed_bytes`), so the command must not change after it is signed:
the worker verifies the object exactly as it receives it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.codec import timestamp_to_wire
from governance.proof import (
    PROOF_MEMBER,
    b64url_decode,
    b64url_encode,
    event_signed_bytes,
    signed_bytes,
)
from producer.keys import SigningKey


def sign_command(
    command: Mapping[str, Any],
    key: SigningKey,
    *,
    audience: str,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """A signed copy of ``command``: ``issued_at`` (now, UTC, unless given) and ``audience``
    set, then ``auth = {"key_id", "signature"}`` over everything else.

    Raises ValueError when the command's ``actor.id`` is not the key's actor (the worker
    would refuse it anyway, and the mistake is the caller's), when ``issued_at`` has no
    time zone, or when the command cannot be canonicalised.
    """
    actor = command.get("actor")
    actor_id = actor.get("id") if isinstance(actor, Mapping) else None
    if actor_id != key.actor_id:
        raise ValueError(
            f"key {key.key_id} signs for actor {key.actor_id!r}, "
            f"not for the command's actor {actor_id!r}"
        )
    if not isinstance(audience, str) or not audience:
        raise ValueError("audience must be a non-empty string")
    if issued_at is None:
        issued_at = datetime.now(UTC)
    elif issued_at.tzinfo is None or issued_at.utcoffset() is None:
        raise ValueError("issued_at must be an aware datetime (with a time zone)")
    # A deep copy: the signed object must not share parts a caller may still change.
    signed = copy.deepcopy(dict(command))
    signed.pop("auth", None)
    signed["issued_at"] = timestamp_to_wire(issued_at)
    signed["audience"] = audience
    signature = key.sign(signed_bytes(signed))
    signed["auth"] = {"key_id": key.key_id, "signature": b64url_encode(signature)}
    return signed


def sign_event(event: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """``event`` with ``proof = {"key_id", "signature"}``: the Ed25519 signature of the
    publishing worker's ``key`` over the RFC 8785 JSON of everything else
    (:func:`governance.proof.event_signed_bytes`). An earlier ``proof`` is replaced.

    The event is signed as it will be published, so it must already carry its ``sequence``.
    Raises ValueError when it cannot be canonicalised.
    """
    signed = {name: value for name, value in event.items() if name != PROOF_MEMBER}
    signature = key.sign(event_signed_bytes(signed))
    signed[PROOF_MEMBER] = {"key_id": key.key_id, "signature": b64url_encode(signature)}
    return signed


def signature_problem(command: Mapping[str, Any], key: SigningKey, *, audience: str) -> str | None:
    """Why ``command``, which carries an ``auth`` member naming ``key``, is not a command
    ``key`` signed for ``audience``, or None: its actor, its audience and its signature
    (checked against the key's public key, as the worker checks it against the registry)."""
    actor = command.get("actor")
    actor_id = actor.get("id") if isinstance(actor, Mapping) else None
    if actor_id != key.actor_id:
        return f"actor.id: {actor_id} is not the signing key's actor {key.actor_id}"
    if command.get("audience") != audience:
        return (
            f"audience: signed for {command.get('audience')!r}, not {audience!r} "
            "(--audience / GOVERNANCE_AUDIENCE)"
        )
    auth = command.get("auth")
    signature = auth.get("signature") if isinstance(auth, Mapping) else None
    try:
        raw = b64url_decode(signature) if isinstance(signature, str) else b""
        message = signed_bytes({k: v for k, v in command.items() if k != "auth"})
        Ed25519PublicKey.from_public_bytes(key.public_key_bytes).verify(raw, message)
    except (InvalidSignature, ValueError):
        return f"auth.signature: does not verify with key {key.key_id} (the key file's)"
    return None
