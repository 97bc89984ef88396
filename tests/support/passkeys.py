"""A passkey in the test process: a real ES256 or EdDSA key that answers a WebAuthn
assertion over a command as an authenticator does (authenticator data, client data JSON,
signature over both), so that the verifier can be specified without a browser. What the
browser's virtual authenticator produces is tested end to end in ``tests/system``."""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.codec import timestamp_to_wire
from governance.passkeys import DEFAULT_ORIGIN, command_challenge, relying_party_of
from governance.proof import b64url_encode

ES256 = -7
EDDSA = -8
UP = 0x01
UV = 0x04


@dataclass
class SoftPasskey:
    """A passkey of ``actor_id`` whose private key lives in this process."""

    actor_id: str
    algorithm: int = ES256
    credential_id: str = field(default_factory=lambda: b64url_encode(secrets.token_bytes(32)))
    sign_count: int = 0

    def __post_init__(self) -> None:
        self._private: Any = (
            ec.generate_private_key(ec.SECP256R1())
            if self.algorithm == ES256
            else Ed25519PrivateKey.generate()
        )

    @property
    def cose_key(self) -> str:
        """The COSE public key, base64url, as the registry stores it."""
        public = self._private.public_key()
        if self.algorithm == ES256:
            numbers = public.public_numbers()
            cose = {
                1: 2,
                3: ES256,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        else:
            cose = {1: 1, 3: EDDSA, -1: 6, -2: public.public_bytes_raw()}
        return b64url_encode(cbor2.dumps(cose))

    def assert_over(
        self,
        challenge: bytes,
        *,
        origin: str = DEFAULT_ORIGIN,
        rp_id: str | None = None,
        flags: int = UP | UV,
        type_: str = "webauthn.get",
    ) -> dict[str, str]:
        """An assertion over ``challenge``: the members a command's passkey ``auth`` carries
        besides ``scheme`` and ``key_id``."""
        self.sign_count += 1
        rp = rp_id if rp_id is not None else relying_party_of(origin) or ""
        authenticator_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([flags])
            + self.sign_count.to_bytes(4, "big")
        )
        client_data = json.dumps(
            {
                "type": type_,
                "challenge": b64url_encode(challenge),
                "origin": origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode()
        signed = authenticator_data + hashlib.sha256(client_data).digest()
        if self.algorithm == ES256:
            signature = self._private.sign(signed, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self._private.sign(signed)
        return {
            "authenticator_data": b64url_encode(authenticator_data),
            "client_data_json": b64url_encode(client_data),
            "signature": b64url_encode(signature),
        }

    def sign(
        self,
        command: Mapping[str, Any],
        *,
        audience: str = "governance",
        over: Mapping[str, Any] | None = None,
        **assertion: Any,
    ) -> dict[str, Any]:
        """``command`` with ``issued_at`` (unless it has one), ``audience`` and a passkey
        ``auth``; the assertion is over ``over`` instead when given (another command)."""
        signed = copy.deepcopy(dict(command))
        signed.pop("auth", None)
        signed.setdefault("issued_at", timestamp_to_wire(datetime.now(UTC)))
        signed["audience"] = audience
        challenge = command_challenge(signed if over is None else over)
        signed["auth"] = {
            "scheme": "webauthn",
            "key_id": self.credential_id,
            **self.assert_over(challenge, **assertion),
        }
        return signed
