"""The actor registry: who may send commands, in which roles and groups, with which keys.

Written only by the operator CLI, through its own database access (that access is the trust
root; the workers' database role can only read these tables). Every function is one
transaction on the connection it is given (a savepoint when the caller already has one
open), and every change leaves its ``registry_audit`` row: the database writes it, in the
same transaction, from triggers on the tables.

Keys are never deleted, only revoked, so signatures made before a revocation stay
verifiable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.codec import timestamp_to_wire
from governance.commands import MAX_ID_LENGTH, MAX_NAME_LENGTH
from governance.model import SYSTEM_ACTOR, ActorType
from governance.proof import b64url_decode, b64url_encode
from governance.satisfiability import RosterActor
from governance.trust import Role

PUBLIC_KEY_LENGTH = 32
#: How many characters of the public key's digest make a default key id (the producer's key
#: files use the same rule, so a generated key and its registration agree by default).
KEY_ID_LENGTH = 16
MAX_GROUPS = 100

ACTOR_COLUMNS = "actor_id, name, type, roles, groups, active, created_at, updated_at"
KEY_COLUMNS = "key_id, actor_id, public_key, created_at, revoked_at, scheme, algorithm"

INSERT_ACTOR = f"""
INSERT INTO actors (actor_id, name, type, roles, groups)
VALUES (%(actor_id)s, %(name)s, %(type)s, %(roles)s, %(groups)s)
RETURNING {ACTOR_COLUMNS}
"""
INSERT_KEY = f"""
INSERT INTO actor_keys (key_id, actor_id, public_key, scheme, algorithm)
VALUES (%(key_id)s, %(actor_id)s, %(public_key)s, %(scheme)s, %(algorithm)s)
RETURNING {KEY_COLUMNS}
"""
# FOR KEY SHARE: the actor cannot vanish between this check and the key's insert.
LOCK_ACTOR = "SELECT actor_id FROM actors WHERE actor_id = %(actor_id)s FOR KEY SHARE"
LOCK_KEY = f"SELECT {KEY_COLUMNS} FROM actor_keys WHERE key_id = %(key_id)s FOR UPDATE"
REVOKE_KEY = f"""
UPDATE actor_keys SET revoked_at = now()
WHERE key_id = %(key_id)s AND revoked_at IS NULL
RETURNING {KEY_COLUMNS}
"""
SET_ACTIVE = f"""
UPDATE actors SET active = %(active)s WHERE actor_id = %(actor_id)s RETURNING {ACTOR_COLUMNS}
"""
SELECT_ACTOR = f"SELECT {ACTOR_COLUMNS} FROM actors WHERE actor_id = %(actor_id)s"
SELECT_ACTORS = f"SELECT {ACTOR_COLUMNS} FROM actors ORDER BY actor_id"
SELECT_KEYS_OF = f"""
SELECT {KEY_COLUMNS} FROM actor_keys WHERE actor_id = %(actor_id)s ORDER BY created_at, key_id
"""
SELECT_KEYS = f"SELECT {KEY_COLUMNS} FROM actor_keys ORDER BY actor_id, created_at, key_id"
LOCK_ACTOR_ROW = f"SELECT {ACTOR_COLUMNS} FROM actors WHERE actor_id = %(actor_id)s FOR UPDATE"
SET_ROLES_AND_GROUPS = f"""
UPDATE actors SET roles = %(roles)s, groups = %(groups)s WHERE actor_id = %(actor_id)s
RETURNING {ACTOR_COLUMNS}
"""
#: What the approval policy's checks need of every registered actor: whether it is active,
#: its roles and groups, and whether it holds a key that is not revoked.
SELECT_ROSTER = """
SELECT a.actor_id, a.active, a.roles, a.groups,
       EXISTS (SELECT FROM actor_keys AS k
               WHERE k.actor_id = a.actor_id AND k.revoked_at IS NULL) AS has_key
FROM actors AS a ORDER BY a.actor_id
"""


class RegistryError(Exception):
    """A registry operation that cannot be done (an unknown actor, a key already revoked…);
    the message says why, for an operator to read."""


class RegistryInputError(RegistryError):
    """An argument that is not valid (a bad actor id, role, type or public key)."""


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """One of an actor's public keys."""

    key_id: str
    actor_id: str
    public_key: str
    created_at: datetime
    revoked_at: datetime | None
    #: ``ed25519``, or ``webauthn`` for a passkey (its ``public_key`` is a COSE key, its
    #: ``key_id`` the credential id, its ``algorithm`` the COSE algorithm).
    scheme: str = "ed25519"
    algorithm: int | None = None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (it still verifies what it signed before)."""
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The key in wire spelling (timestamps as ISO-8601 UTC)."""
        return {
            "key_id": self.key_id,
            "actor_id": self.actor_id,
            "public_key": self.public_key,
            "created_at": timestamp_to_wire(self.created_at),
            "revoked_at": timestamp_to_wire(self.revoked_at),
            # Named for passkeys only, as a command names its auth scheme only for them.
            **(
                {"scheme": self.scheme, "algorithm": self.algorithm}
                if self.scheme != "ed25519"
                else {}
            ),
        }


@dataclass(frozen=True, slots=True)
class RegisteredActor:
    """A registered actor, with all its keys (revoked ones included), oldest first."""

    actor_id: str
    name: str | None
    type: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    active: bool
    created_at: datetime
    updated_at: datetime
    keys: tuple[RegisteredKey, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The actor in wire spelling, its keys as a list."""
        return {
            "actor_id": self.actor_id,
            "name": self.name,
            "type": self.type,
            "roles": list(self.roles),
            "groups": list(self.groups),
            "active": self.active,
            "created_at": timestamp_to_wire(self.created_at),
            "updated_at": timestamp_to_wire(self.updated_at),
            "keys": [key.to_dict() for key in self.keys],
        }


def default_key_id(public_key: bytes) -> str:
    """The key id a raw public key gets when none is chosen: the first characters of the
    base64url (no padding) sha256 of the key."""
    return b64url_encode(hashlib.sha256(public_key).digest())[:KEY_ID_LENGTH]


# --- validation ---------------------------------------------------------------------------


def _identifier(value: object, what: str) -> str:
    # The shape commands require of their identifiers: a registered name a command cannot
    # spell would be of no use.
    if not isinstance(value, str):
        raise RegistryInputError(f"{what} must be a string")
    if not value.strip():
        raise RegistryInputError(f"{what} must not be blank")
    if len(value) > MAX_ID_LENGTH:
        raise RegistryInputError(f"{what} must be at most {MAX_ID_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise RegistryInputError(f"{what} must not contain control characters")
    if not _encodable(value):
        raise RegistryInputError(f"{what} must be valid Unicode text")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_actor_id(actor_id: object) -> str:
    """``actor_id`` if it may be registered; the internal ``system`` actor may not."""
    checked = _identifier(actor_id, "actor id")
    if checked == SYSTEM_ACTOR.id:
        raise RegistryInputError(
            f"actor id {SYSTEM_ACTOR.id!r} is internal to the worker and cannot be registered"
        )
    return checked


def _name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise RegistryInputError("name must be a string")
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryInputError(f"name must be at most {MAX_NAME_LENGTH} characters")
    if "\x00" in name or not _encodable(name):
        raise RegistryInputError("name must be valid text without NUL characters")
    return name


def _actor_type(value: object) -> str:
    allowed = [member.value for member in ActorType]
    if value not in allowed:
        raise RegistryInputError(f"type must be one of {'|'.join(allowed)}, got {value!r}")
    return str(value)


def _roles(values: Iterable[str]) -> list[str]:
    allowed = [member.value for member in Role]
    roles = list(values) if not isinstance(values, str) else [values]
    for role in roles:
        if role not in allowed:
            raise RegistryInputError(f"role must be one of {'|'.join(allowed)}, got {role!r}")
    return sorted(set(roles))


def _groups(values: Iterable[str]) -> list[str]:
    groups = list(values) if not isinstance(values, str) else [values]
    checked = {_identifier(group, "group") for group in groups}
    if len(checked) > MAX_GROUPS:
        raise RegistryInputError(f"an actor belongs to at most {MAX_GROUPS} groups")
    return sorted(checked)


def validate_public_key(public_key: object) -> bytes:
    """The raw 32 bytes of a base64url (no padding) Ed25519 public key."""
    if not isinstance(public_key, str):
        raise RegistryInputError("public key must be a string")
    try:
        # Canonical spellings only, so one key cannot be registered twice under two spellings.
        raw = b64url_decode(public_key)
    except ValueError as exc:
        raise RegistryInputError(f"public key is not base64url without padding: {exc}") from None
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise RegistryInputError(
            f"public key must decode to {PUBLIC_KEY_LENGTH} bytes, got {len(raw)}"
        )
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:  # pragma: no cover - the backend takes any 32 bytes today
        raise RegistryInputError(f"public key is not a valid Ed25519 public key: {exc}") from None
    return raw


def _key_id(key_id: str | None, raw: bytes) -> str:
    return default_key_id(raw) if key_id is None else _identifier(key_id, "key id")


# --- rows ---------------------------------------------------------------------------------


def _key(row: tuple[Any, ...]) -> RegisteredKey:
    return RegisteredKey(*row)


def _actor(row: tuple[Any, ...], keys: Iterable[RegisteredKey] = ()) -> RegisteredActor:
    actor_id, name, type_, roles, groups, active, created_at, updated_at = row
    return RegisteredActor(
        actor_id=actor_id,
        name=name,
        type=type_,
        roles=tuple(roles),
        groups=tuple(groups),
        active=active,
        created_at=created_at,
        updated_at=updated_at,
        keys=tuple(keys),
    )


def _insert_key(
    conn: psycopg.Connection[Any],
    actor_id: str,
    public_key: str,
    key_id: str,
    *,
    scheme: str = "ed25519",
    algorithm: int | None = None,
) -> RegisteredKey:
    params = {
        "key_id": key_id,
        "actor_id": actor_id,
        "public_key": public_key,
        "scheme": scheme,
        "algorithm": algorithm,
    }
    try:
        # A savepoint: the caller's transaction survives the duplicate, to say which it is.
        with conn.transaction():
            row = conn.execute(INSERT_KEY, params).fetchone()
    except psycopg.errors.UniqueViolation:
        # The same key again (under its default id, too) says whose it is: that is the news.
        holder = conn.execute(
            "SELECT key_id, actor_id FROM actor_keys WHERE public_key = %s", (public_key,)
        ).fetchone()
        if holder is not None:
            raise RegistryError(
                f"this public key is already registered as key {holder[0]!r} of actor {holder[1]!r}"
            ) from None
        raise RegistryError(f"key id {key_id!r} is already registered") from None
    assert row is not None
    return _key(row)


# --- operations ---------------------------------------------------------------------------


def add_actor(
    conn: psycopg.Connection[Any],
    actor_id: str,
    name: str | None,
    type: str,
    roles: Iterable[str],
    groups: Iterable[str],
    public_key: str | None = None,
    key_id: str | None = None,
) -> RegisteredActor:
    """Register a new actor, active, with its first public key if one is given."""
    params = {
        "actor_id": validate_actor_id(actor_id),
        "name": _name(name),
        "type": _actor_type(type),
        "roles": _roles(roles),
        "groups": _groups(groups),
    }
    if public_key is None and key_id is not None:
        raise RegistryInputError("a key id needs the public key it names")
    raw = None if public_key is None else validate_public_key(public_key)
    with conn.transaction():
        try:
            row = conn.execute(INSERT_ACTOR, params).fetchone()
        except psycopg.errors.UniqueViolation:
            raise RegistryError(f"actor {actor_id!r} already exists") from None
        assert row is not None
        keys = []
        if public_key is not None and raw is not None:
            keys.append(_insert_key(conn, row[0], public_key, _key_id(key_id, raw)))
    return _actor(row, keys)


def add_key(
    conn: psycopg.Connection[Any], actor_id: str, public_key: str, key_id: str | None = None
) -> RegisteredKey:
    """Register another public key for an existing actor (a rotation: the older keys stay
    valid until they are revoked)."""
    actor_id = _identifier(actor_id, "actor id")
    raw = validate_public_key(public_key)
    chosen = _key_id(key_id, raw)
    with conn.transaction():
        if conn.execute(LOCK_ACTOR, {"actor_id": actor_id}).fetchone() is None:
            raise RegistryError(f"unknown actor {actor_id!r}")
        return _insert_key(conn, actor_id, public_key, chosen)


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> RegisteredKey:
    """Revoke a key for good: commands signed with it are refused from now on, while the
    decisions it signed before stay verifiable."""
    key_id = _identifier(key_id, "key id")
    with conn.transaction():
        current = conn.execute(LOCK_KEY, {"key_id": key_id}).fetchone()
        if current is None:
            raise RegistryError(f"unknown key {key_id!r}")
        if current[4] is not None:
            raise RegistryError(
                f"key {key_id!r} was already revoked at {timestamp_to_wire(current[4])}"
            )
        row = conn.execute(REVOKE_KEY, {"key_id": key_id}).fetchone()
    assert row is not None
    return _key(row)


def set_active(conn: psycopg.Connection[Any], actor_id: str, active: bool) -> RegisteredActor:
    """Activate or deactivate an actor: an inactive actor's commands are refused, whatever
    key signs them."""
    actor_id = _identifier(actor_id, "actor id")
    with conn.transaction():
        row = conn.execute(SET_ACTIVE, {"actor_id": actor_id, "active": bool(active)}).fetchone()
        if row is None:
            raise RegistryError(f"unknown actor {actor_id!r}")
        keys = [_key(key) for key in conn.execute(SELECT_KEYS_OF, {"actor_id": actor_id})]
    return _actor(row, keys)


def list_actors(conn: psycopg.Connection[Any]) -> list[RegisteredActor]:
    """Every registered actor by id, each with its keys."""
    with conn.transaction():
        actor_rows = conn.execute(SELECT_ACTORS).fetchall()
        keys: dict[str, list[RegisteredKey]] = {}
        for key_row in conn.execute(SELECT_KEYS):
            key = _key(key_row)
            keys.setdefault(key.actor_id, []).append(key)
    return [_actor(row, keys.get(row[0], ())) for row in actor_rows]


def show_actor(conn: psycopg.Connection[Any], actor_id: str) -> RegisteredActor:
    """One actor with all its keys, revoked ones included."""
    actor_id = _identifier(actor_id, "actor id")
    with conn.transaction():
        row = conn.execute(SELECT_ACTOR, {"actor_id": actor_id}).fetchone()
        if row is None:
            raise RegistryError(f"unknown actor {actor_id!r}")
        keys = [_key(key) for key in conn.execute(SELECT_KEYS_OF, {"actor_id": actor_id})]
    return _actor(row, keys)


def add_role(conn: psycopg.Connection[Any], actor_id: str, role: str) -> RegisteredActor:
    """Give an actor one more role."""
    return _change_membership(conn, actor_id, role=role, add=True)


def remove_role(conn: psycopg.Connection[Any], actor_id: str, role: str) -> RegisteredActor:
    """Take a role from an actor."""
    return _change_membership(conn, actor_id, role=role, add=False)


def add_group(conn: psycopg.Connection[Any], actor_id: str, group: str) -> RegisteredActor:
    """Make an actor a member of one more group."""
    return _change_membership(conn, actor_id, group=group, add=True)


def remove_group(conn: psycopg.Connection[Any], actor_id: str, group: str) -> RegisteredActor:
    """Take an actor out of a group."""
    return _change_membership(conn, actor_id, group=group, add=False)


def _change_membership(
    conn: psycopg.Connection[Any],
    actor_id: str,
    *,
    add: bool,
    role: str | None = None,
    group: str | None = None,
) -> RegisteredActor:
    """Add or remove one role or one group of an actor (its audit row is the trigger's)."""
    actor_id = _identifier(actor_id, "actor id")
    if role is not None:
        kind, value = "role", _roles([role])[0]
    else:
        kind, value = "group", _identifier(group, "group")
    with conn.transaction():
        row = conn.execute(LOCK_ACTOR_ROW, {"actor_id": actor_id}).fetchone()
        if row is None:
            raise RegistryError(f"unknown actor {actor_id!r}")
        current = _actor(row)
        held = set(current.roles if kind == "role" else current.groups)
        if add and value in held:
            raise RegistryError(f"actor {actor_id!r} already has {kind} {value!r}")
        if not add and value not in held:
            raise RegistryError(f"actor {actor_id!r} has no {kind} {value!r}")
        changed = held | {value} if add else held - {value}
        roles = sorted(changed) if kind == "role" else list(current.roles)
        groups = _groups(changed) if kind == "group" else list(current.groups)
        updated = conn.execute(
            SET_ROLES_AND_GROUPS, {"actor_id": actor_id, "roles": roles, "groups": groups}
        ).fetchone()
        assert updated is not None
        keys = [_key(key) for key in conn.execute(SELECT_KEYS_OF, {"actor_id": actor_id})]
    return _actor(updated, keys)


def roster(conn: psycopg.Connection[Any]) -> list[RosterActor]:
    """Every registered actor as the approval policy's checks see it (see
    :mod:`governance.satisfiability`), by id."""
    return [
        RosterActor(
            actor_id=actor_id,
            active=active,
            roles=frozenset(roles),
            groups=frozenset(groups),
            has_key=has_key,
        )
        for actor_id, active, roles, groups, has_key in conn.execute(SELECT_ROSTER)
    ]
