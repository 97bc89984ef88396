"""Who sent a command: its signature checked against the registered key. Pure: the worker
runs it in the guarded transaction with the key and actor it read in the first round trip,
and ``governance verify`` runs it again with the registry as it stood at the decision.

A signed command carries ``auth = {"key_id", "signature"}``: an Ed25519 signature over the
RFC 8785 canonical JSON of the command as received without ``auth``
(:func:`governance.proof.signed_bytes`), plus the ``audience`` it is meant for and the
``issued_at`` instant it was signed at. With ``auth.scheme = "webauthn"`` the proof is a
passkey's assertion over the SHA-256 of those same bytes (:mod:`governance.passkeys`); the
key it names must be a passkey of the same actor. Anything that does not hold is an
``unauthenticated`` rejection that says which check failed; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.commands import Command
from governance.model import ActorType
from governance.passkeys import (
    DEFAULT_ORIGINS,
    SCHEME_ED25519,
    SCHEME_WEBAUTHN,
    SCHEMES,
    assertion_problem,
)
from governance.proof import b64url_decode, signed_bytes
from governance.rules import Rejection, RejectionCode
from governance.trust import Principal

#: How far ahead of the database clock a command may say it was issued (clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)
SIGNATURE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A registered public key, as the transaction read it."""

    key_id: str
    actor_id: str
    public_key: str
    revoked_at: datetime | None
    #: ``ed25519`` (``public_key`` is the raw key) or ``webauthn`` (a passkey:
    #: ``public_key`` is its COSE key, ``algorithm`` its COSE algorithm).
    scheme: str = SCHEME_ED25519
    algorithm: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """What this deployment accepts: its audience, the age limit of a signed command, and
    the console origins a passkey's assertion may come from."""

    audience: str
    max_age: timedelta
    webauthn_origins: frozenset[str] = DEFAULT_ORIGINS


DEFAULT_AUDIENCE = "governance"
DEFAULT_MAX_AGE = timedelta(hours=24)
DEFAULT_LEDGER_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Trust:
    """How the guarded transaction judges who sent its commands.

    ``signed`` (the default) proves every command's author by its signature and checks the
    roles table; development mode (``signed=False``) takes the actor as asserted and skips
    the role checks. ``internal`` marks the worker's own commands (expiry, by the ``system``
    actor), which carry no signature and need no role. The separation-of-duties rules hold
    in every mode, and group membership always comes from the registry.
    """

    signed: bool = True
    policy: Policy = Policy(DEFAULT_AUDIENCE, DEFAULT_MAX_AGE)
    internal: bool = False
    #: Whether a submit takes its approval requirements from the deployment's approval policy
    #: (the default; refused while none is applied) or from its requester alone (requester
    #: mode, for development).
    policy_required: bool = True
    #: How long the ledger keeps a command's outcome at least (None: forever); a signed
    #: command is kept besides until it is too old to be accepted (``issued_at`` plus the
    #: maximum age), so no re-send of it can ever be judged as new.
    ledger_window: timedelta | None = DEFAULT_LEDGER_WINDOW


#: The default: commands signed, judged by this deployment's default policy.
SIGNED = Trust()


def principal_from_row(row: tuple[Any, ...]) -> Principal:
    """A registry row ``(actor_id, name, type, roles, groups, active)`` as a principal."""
    actor_id, name, type_, roles, groups, active = row
    return Principal(
        actor_id=actor_id,
        name=name,
        type=ActorType(type_),
        roles=frozenset(roles or ()),
        groups=frozenset(groups or ()),
        active=bool(active),
    )


def authenticate(
    payload: Mapping[str, Any],
    command: Command,
    key: KeyRecord | None,
    principal: Principal | None,
    policy: Policy,
    now: datetime,
) -> Rejection | Principal:
    """The registered principal who signed ``payload``, or why it is not proved.

    ``key`` is the registry's row for the command's ``auth.key_id`` (None when unknown),
    ``principal`` the registry's row for ``actor.id`` (None when unregistered).
    """
    signer = prove_signer(payload, command, key, principal, policy, now)
    if isinstance(signer, Rejection):
        return signer
    return refuse_standing(command, signer, now) or signer


def prove_signer(
    payload: Mapping[str, Any],
    command: Command,
    key: KeyRecord | None,
    principal: Principal | None,
    policy: Policy,
    now: datetime,
) -> Rejection | Principal:
    """The registered principal whose unrevoked key signed ``payload`` for this deployment
    within the maximum age, or why the signature proves nobody.

    Only what no later change can make good is checked here: a command this refuses never
    proves its sender, whenever it is sent again. Whether the proved signer may act *now* is
    :func:`refuse_standing`'s (its refusals can change: the actor reactivated, the clock
    catching up with ``issued_at``).
    """

    def refuse(message: str) -> Rejection:
        return _unauthenticated(command, message)

    auth = payload.get("auth")
    if not isinstance(auth, Mapping):
        return refuse("auth: a signed command is required (auth with key_id and signature)")
    key_id, signature = auth.get("key_id"), auth.get("signature")
    scheme = auth.get("scheme") or SCHEME_ED25519
    if scheme not in SCHEMES:
        return refuse(f"auth.scheme: unknown scheme {scheme!r} (ed25519 or webauthn)")
    if not isinstance(key_id, str) or not key_id:
        return refuse("auth.key_id: missing")
    if not isinstance(signature, str) or not signature:
        return refuse("auth.signature: missing")
    audience = payload.get("audience")
    if audience is None:
        return refuse("audience: a signed command must name its audience")
    if audience != policy.audience:
        return refuse(f"wrong audience: this deployment is {policy.audience!r}, not {audience!r}")
    if command.issued_at is None:
        return refuse("issued_at: a signed command must say when it was issued")
    if command.issued_at < now - policy.max_age:
        return refuse(
            f"expired: issued at {command.issued_at.isoformat()}, more than "
            f"{int(policy.max_age.total_seconds())} s before now"
        )
    if key is None:
        return refuse(f"unknown key {key_id}")
    if key.actor_id != command.actor.id:
        return refuse(f"key {key_id} belongs to {key.actor_id}, not {command.actor.id}")
    if key.revoked_at is not None:
        return refuse(f"key {key_id} was revoked at {key.revoked_at.isoformat()}")
    if principal is None:
        return refuse(f"actor {command.actor.id} is not registered")
    if scheme == SCHEME_WEBAUTHN or key.scheme == SCHEME_WEBAUTHN:
        problem = passkey_proof_problem(payload, key, policy.webauthn_origins)
        return principal if problem is None else refuse(problem)
    try:
        raw_signature = b64url_decode(signature)
    except ValueError:
        return refuse("auth.signature: not base64url without padding")
    if len(raw_signature) != SIGNATURE_LENGTH:
        return refuse(
            f"auth.signature: expected {SIGNATURE_LENGTH} bytes, got {len(raw_signature)}"
        )
    try:
        message = signed_bytes(payload)
    except ValueError as exc:
        return refuse(f"the command cannot be canonicalised for its signature: {exc}")
    try:
        public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(key.public_key))
        public_key.verify(raw_signature, message)
    except InvalidSignature:
        return refuse(f"the signature does not verify with key {key_id}")
    except ValueError:
        return refuse(f"key {key_id} is not a usable Ed25519 public key")
    return principal


def refuse_standing(command: Command, signer: Principal, now: datetime) -> Rejection | None:
    """Why the proved ``signer`` may not act at ``now`` (None: it may): a deactivated actor,
    or a command issued ahead of the clock. Both can change, so the worker records such a
    refusal: the command, sent again once they have, is answered the same."""
    if not signer.active:
        return _unauthenticated(command, f"actor {command.actor.id} is not active")
    if command.issued_at is not None and command.issued_at > now + MAX_CLOCK_SKEW:
        return _unauthenticated(
            command, f"issued_at {command.issued_at.isoformat()} is in the future"
        )
    return None


def _unauthenticated(command: Command, message: str) -> Rejection:
    return Rejection(
        RejectionCode.UNAUTHENTICATED, message, expected_revision=command.expected_revision
    )


def passkey_proof_problem(
    payload: Mapping[str, Any], key: KeyRecord, origins: frozenset[str]
) -> str | None:
    """Why ``payload``'s passkey proof does not verify with the registered ``key``, or None.

    The one check of a ``webauthn`` proof, shared by the worker (through
    :func:`authenticate`) and ``governance verify``'s form checks: the command's scheme and
    the key's must agree, then :func:`governance.passkeys.assertion_problem`.
    """
    auth = payload.get("auth")
    scheme = (auth.get("scheme") if isinstance(auth, Mapping) else None) or SCHEME_ED25519
    if key.scheme != scheme:
        return f"key {key.key_id} is a {key.scheme} key, the command's auth.scheme is {scheme}"
    return assertion_problem(
        payload,
        key_id=key.key_id,
        cose_key=key.public_key,
        algorithm=key.algorithm,
        origins=origins,
    )
