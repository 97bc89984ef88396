"""Passkey enrollment: one-time links, and the passkey a link registers.

``governance actors enroll ACTOR`` issues a link (valid 15 minutes, single use); the console
that serves it registers the passkey it creates as a key of that actor. Only the SHA-256 of
the link's token is stored, so a reader of the database cannot enroll with it. Both steps
are registry changes: the database writes their audit rows and takes the registry's
exclusive lock (triggers of migration 0014), so a guarded transaction in flight finishes
under the registry it started with. The enrollment itself is the database function
``governance_enroll_passkey``, which the reader role may call: the console enrolls with the
reader's access, so it can register a key only for a link an operator issued.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from governance.passkeys import usable_key
from governance.proof import b64url_decode
from worker.registry import (
    KEY_COLUMNS,
    RegisteredKey,
    RegistryError,
    RegistryInputError,
    _identifier,
)

#: How long a printed link may be used.
LINK_VALIDITY = timedelta(minutes=15)
#: Random bytes of a token (base64url in the link).
TOKEN_BYTES = 32

ISSUE = """
INSERT INTO enrollment_links (token_hash, actor_id, expires_at)
SELECT %(token_hash)s, a.actor_id, now() + %(validity)s
FROM actors AS a WHERE a.actor_id = %(actor_id)s
RETURNING expires_at
"""
LOOKUP = """
SELECT l.actor_id, a.name, l.expires_at, l.used_at, l.expires_at <= now() AS expired, a.active
FROM enrollment_links AS l JOIN actors AS a USING (actor_id)
WHERE l.token_hash = %(token_hash)s
"""
#: The database's one way to enroll by a link (it checks the link, registers the key and uses
#: the link up, with its owner's rights): the console needs no write on the registry for it.
ENROLL = f"""
SELECT {KEY_COLUMNS} FROM governance_enroll_passkey(
    %(token_hash)s, %(key_id)s, %(public_key)s, %(algorithm)s)
"""
#: The SQLSTATE with which that function refuses a link (unknown, used, expired, inactive).
LINK_REFUSED = "GE001"


class EnrollmentError(RegistryError):
    """A link that cannot be used (unknown, expired, used) or a passkey that cannot be
    registered; the message says which, for the person holding the link."""


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A link just issued: its token (shown once, never stored) and when it expires."""

    actor_id: str
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PendingEnrollment:
    """What a valid link enrolls: whose passkey."""

    actor_id: str
    name: str | None
    expires_at: datetime


def token_hash(token: str) -> str:
    """What the database keeps of a link's token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_link(
    conn: psycopg.Connection[Any], actor_id: str, validity: timedelta = LINK_VALIDITY
) -> IssuedLink:
    """A new one-time link for ``actor_id`` (which must be registered)."""
    actor_id = _identifier(actor_id, "actor id")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with conn.transaction():
        row = conn.execute(
            ISSUE, {"token_hash": token_hash(token), "actor_id": actor_id, "validity": validity}
        ).fetchone()
    if row is None:
        raise EnrollmentError(f"unknown actor {actor_id!r}")
    return IssuedLink(actor_id, token, row[0])


def _valid(row: tuple[Any, ...] | None) -> PendingEnrollment:
    if row is None:
        raise EnrollmentError("this enrollment link is not known")
    actor_id, name, expires_at, used_at, expired, active = row
    if used_at is not None:
        raise EnrollmentError("this enrollment link was already used")
    if expired:
        raise EnrollmentError("this enrollment link has expired; ask for a new one")
    if not active:
        raise EnrollmentError(f"actor {actor_id} is not active")
    return PendingEnrollment(actor_id, name, expires_at)


def pending_enrollment(conn: psycopg.Connection[Any], token: str) -> PendingEnrollment:
    """Whose passkey the link ``token`` enrolls; EnrollmentError when it cannot be used."""
    with conn.transaction():
        return _valid(conn.execute(LOOKUP, {"token_hash": token_hash(token)}).fetchone())


def enroll_passkey(
    conn: psycopg.Connection[Any],
    token: str,
    credential_id: str,
    cose_key: str,
    algorithm: int,
) -> RegisteredKey:
    """Register the passkey ``credential_id`` (base64url; its COSE public key, base64url,
    and COSE algorithm) for the actor of link ``token``, and use the link up: both or
    neither. EnrollmentError when the link cannot be used or the key is not a passkey key."""
    try:
        b64url_decode(credential_id)
    except ValueError as exc:
        raise RegistryInputError(f"credential id is not base64url: {exc}") from None
    credential_id = _identifier(credential_id, "credential id")
    problem = usable_key(cose_key, algorithm)
    if problem is not None:
        raise RegistryInputError(f"passkey public key: {problem}")
    params = {
        "token_hash": token_hash(token),
        "key_id": credential_id,
        "public_key": cose_key,
        "algorithm": algorithm,
    }
    try:
        with conn.transaction():
            row = conn.execute(ENROLL, params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise _already_registered(conn, credential_id, cose_key) from None
    except psycopg.Error as exc:
        if exc.sqlstate == LINK_REFUSED:
            raise EnrollmentError(exc.diag.message_primary or str(exc)) from None
        raise
    assert row is not None
    return RegisteredKey(*row)


def _already_registered(
    conn: psycopg.Connection[Any], credential_id: str, cose_key: str
) -> RegistryError:
    holder = conn.execute(
        "SELECT key_id, actor_id FROM actor_keys WHERE public_key = %s OR key_id = %s",
        (cose_key, credential_id),
    ).fetchone()
    if holder is None:
        return RegistryError(f"key id {credential_id!r} is already registered")
    return RegistryError(
        f"this passkey is already registered as key {holder[0]!r} of actor {holder[1]!r}"
    )
