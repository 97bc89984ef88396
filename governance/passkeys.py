"""A command signed by a passkey: the WebAuthn assertion that proves it, checked. Pure.

A person approves from a browser with a passkey. The browser asks the authenticator for an
assertion whose challenge is the SHA-256 of the RFC 8785 JSON of the command without its
``auth`` (:func:`command_challenge`), and the command carries that assertion as
``auth = {"scheme": "webauthn", "key_id": <credential id>, "authenticator_data",
"client_data_json", "signature"}`` (base64url). :func:`assertion_problem` is the one place
that judges such a proof: the worker runs it in the guarded transaction (through
:func:`governance.authentication.authenticate`), and ``governance verify`` runs it again,
offline, exactly so. The COSE key and the signature are parsed and checked by the
``webauthn`` library; which checks run, and in which order, is decided here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from webauthn.helpers.decode_credential_public_key import decode_credential_public_key
from webauthn.helpers.decoded_public_key_to_cryptography import (
    decoded_public_key_to_cryptography,
)
from webauthn.helpers.parse_authenticator_data import parse_authenticator_data
from webauthn.helpers.parse_client_data_json import parse_client_data_json
from webauthn.helpers.verify_signature import verify_signature

from governance.proof import b64url_decode, b64url_encode, signed_bytes

#: The auth schemes of a command: an Ed25519 signature (the default, ``scheme`` absent) or a
#: passkey's WebAuthn assertion.
SCHEME_ED25519 = "ed25519"
SCHEME_WEBAUTHN = "webauthn"
SCHEMES = frozenset({SCHEME_ED25519, SCHEME_WEBAUTHN})

#: The COSE algorithms a passkey may sign with: ES256 (ECDSA P-256, SHA-256) and EdDSA.
ALGORITHMS: Mapping[int, str] = {-7: "ES256", -8: "EdDSA"}

#: Where the console is served by default; its host is the relying-party id.
DEFAULT_ORIGIN = "http://localhost:8080"
DEFAULT_ORIGINS: frozenset[str] = frozenset({DEFAULT_ORIGIN})

#: The members of a passkey proof besides ``scheme`` and ``key_id``, all base64url.
ASSERTION_MEMBERS = ("authenticator_data", "client_data_json", "signature")

_USER_PRESENT = 0x01
_USER_VERIFIED = 0x04


def command_challenge(command: Mapping[str, Any]) -> bytes:
    """The challenge a passkey signs for ``command``: SHA-256 of the RFC 8785 JSON of the
    command without its ``auth`` member. Raises ValueError when it cannot be canonicalised."""
    return hashlib.sha256(signed_bytes(command)).digest()


def relying_party_of(origin: str) -> str | None:
    """The relying-party id of ``origin``: its host (None when it has none)."""
    try:
        host = urlsplit(origin).hostname
    except ValueError:
        return None
    return host or None


def origins_from(raw: str) -> frozenset[str]:
    """The origins a setting lists (separated by commas or white space), each as a browser
    writes it in ``clientDataJSON``: scheme, host and port, no path and no trailing slash.
    Raises ValueError naming one that is not an origin."""
    found = set()
    for part in raw.replace(",", " ").split():
        origin = part.rstrip("/")
        parsed = urlsplit(origin)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path:
            raise ValueError(f"{part!r} is not an origin (scheme://host[:port])")
        found.add(origin)
    return frozenset(found)


def usable_key(cose_key: str, algorithm: int) -> str | None:
    """Why the COSE public key ``cose_key`` (base64url) is not a passkey key of
    ``algorithm``, or None when it is one."""
    if algorithm not in ALGORITHMS:
        return f"algorithm {algorithm} is not one of {_algorithms()}"
    try:
        decoded = decode_credential_public_key(b64url_decode(cose_key))
        decoded_public_key_to_cryptography(decoded)
    except Exception as exc:  # the library raises its own kinds for every malformed key
        return f"not a usable COSE public key ({exc})"
    if int(decoded.alg) != algorithm:
        return f"the COSE key is for algorithm {int(decoded.alg)}, not {algorithm}"
    return None


def assertion_problem(
    command: Mapping[str, Any],
    *,
    key_id: str,
    cose_key: str,
    algorithm: int | None,
    origins: Iterable[str],
) -> str | None:
    """Why ``command``'s passkey proof does not prove it, naming the check; None when it
    does. ``cose_key`` and ``algorithm`` are the registered key of ``key_id``; ``origins``
    the console origins this deployment accepts (each one's host is its relying-party id).

    The checks, in order: the proof's members are base64url; ``clientDataJSON.type`` is
    ``webauthn.get``; its ``challenge`` is :func:`command_challenge` of the command; its
    ``origin`` is an accepted one; the authenticator data's rpIdHash is that origin's
    relying-party id's; the user-present and user-verified flags are set; the signature
    over ``authenticatorData ‖ SHA-256(clientDataJSON)`` holds for the registered key.
    """
    auth = command.get("auth")
    if not isinstance(auth, Mapping):
        return "auth: missing"
    raw: dict[str, bytes] = {}
    for member in ASSERTION_MEMBERS:
        value = auth.get(member)
        if not isinstance(value, str) or not value:
            return f"auth.{member}: missing"
        try:
            raw[member] = b64url_decode(value)
        except ValueError as exc:
            return f"auth.{member}: {exc}"
    try:
        client_data = parse_client_data_json(raw["client_data_json"])
    except Exception as exc:  # malformed JSON or missing members, in the library's words
        return f"auth.client_data_json: not a WebAuthn clientDataJSON ({exc})"
    if client_data.type != "webauthn.get":
        return f"clientDataJSON.type is {client_data.type!r}, not 'webauthn.get'"
    try:
        expected = command_challenge(command)
    except ValueError as exc:
        return f"the command cannot be canonicalised for its challenge: {exc}"
    if client_data.challenge != expected:
        return (
            "clientDataJSON.challenge is not the SHA-256 of this command without auth "
            f"(expected {b64url_encode(expected)}): the assertion is over another command"
        )
    accepted = frozenset(origins)
    if client_data.origin not in accepted:
        shown = ", ".join(sorted(accepted)) or "none"
        return (
            f"clientDataJSON.origin {client_data.origin!r} is not one of "
            f"GOVERNANCE_WEBAUTHN_ORIGINS ({shown})"
        )
    rp_id = relying_party_of(client_data.origin)
    try:
        authenticator = parse_authenticator_data(raw["authenticator_data"])
    except Exception as exc:
        return f"auth.authenticator_data: not WebAuthn authenticator data ({exc})"
    if rp_id is None or authenticator.rp_id_hash != hashlib.sha256(rp_id.encode()).digest():
        return f"authenticatorData.rpIdHash is not that of the relying party {rp_id!r}"
    flags = raw["authenticator_data"][32]
    if not flags & _USER_PRESENT:
        return "authenticatorData: the user-present flag (UP) is not set"
    if not flags & _USER_VERIFIED:
        return "authenticatorData: the user-verified flag (UV) is not set"
    if algorithm is None or algorithm not in ALGORITHMS:
        return f"key {key_id} is not a passkey of {_algorithms()}"
    try:
        decoded = decode_credential_public_key(b64url_decode(cose_key))
        public_key = decoded_public_key_to_cryptography(decoded)
    except Exception:
        return f"key {key_id} is not a usable COSE public key"
    if int(decoded.alg) != algorithm:
        return f"key {key_id} is registered for algorithm {algorithm}, its COSE key is not"
    signed = raw["authenticator_data"] + hashlib.sha256(raw["client_data_json"]).digest()
    try:
        verify_signature(
            public_key=public_key,
            signature_alg=decoded.alg,
            signature=raw["signature"],
            data=signed,
        )
    except (InvalidSignature, ValueError):
        return f"the passkey signature does not verify with key {key_id}"
    return None


def _algorithms() -> str:
    return ", ".join(f"{name} ({number})" for number, name in ALGORITHMS.items())
