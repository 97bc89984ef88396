"""Proved identities for the tests: every actor a test names has a key, is registered in the
test databases, and every command a test sends is signed — as the default (signed) mode of
the worker requires.

Keys are derived from the actor id, so a test (or a worker it starts) that names ``alice``
always signs as the same ``alice``. An actor is registered, with every role, the first time a
command of it is signed, in every database the tests track (the run's database, and any
private database a test migrates itself). Tests about roles, groups and keys register their
own actors with :func:`register`.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from producer.keys import SigningKey, write_key_file
from producer.signing import sign_command

AUDIENCE = "governance"
ALL_ROLES = ("requester", "approver", "operator")
#: Actors that are never registered: the worker's own, and ones tests use to be unknown.
UNREGISTERED = frozenset({"system"})
#: The actor every worker of the tests signs its events as (``GOVERNANCE_WORKER_KEY``),
#: registered with the ``worker`` role in every tracked database.
WORKER_ACTOR = "test-worker"

_lock = threading.Lock()
_databases: set[str] = set()
_registered: dict[str, set[str]] = {}


def key_for(actor_id: str) -> SigningKey:
    """The test key of ``actor_id`` (the same in every process of the run)."""
    seed = hashlib.sha256(f"governance-test-key:{actor_id}".encode()).digest()
    return SigningKey(actor_id=actor_id, key_id=f"test-{actor_id}"[:128], seed=seed)


def track(database_url: str) -> None:
    """Register every signing actor in this (migrated) database from now on, and the tests'
    worker (whose key signs the events) at once."""
    with _lock:
        _databases.add(database_url)
        _registered.setdefault(database_url, set())
    register_worker(database_url)


def worker_key() -> SigningKey:
    """The key every worker of the tests signs its events with."""
    return key_for(WORKER_ACTOR)


def register_worker(database_url: str, actor_id: str = WORKER_ACTOR) -> SigningKey:
    """Register ``actor_id`` with the ``worker`` role and its test key, as an operator
    registers a worker (``governance actors add ID --type service --role worker``)."""
    return register(
        database_url, actor_id, roles=("worker",), name="Test worker", actor_type="service"
    )


def trusted_worker_keys() -> Any:
    """An event verifier trusting the tests' worker key, given explicitly (for a subscriber
    in the test process, which has no database setting to find the registry by)."""
    from producer.event_proof import EventVerifier, TrustedKey

    key = worker_key()
    return EventVerifier.trusting([TrustedKey(key.key_id, key.public_key_bytes, key.actor_id)])


def worker_key_file() -> Path:
    """The file of the tests' worker key (``GOVERNANCE_WORKER_KEY`` of every worker)."""
    return key_file(_keys_directory(), WORKER_ACTOR)


def _keys_directory() -> Path:
    global _key_dir
    with _lock:
        if _key_dir is None:
            _key_dir = Path(tempfile.mkdtemp(prefix="governance-test-keys-"))
        return _key_dir


def untrack(database_url: str) -> None:
    with _lock:
        _databases.discard(database_url)
        _registered.pop(database_url, None)


def register(
    database_url: str,
    actor_id: str,
    *,
    roles: Iterable[str] = ALL_ROLES,
    groups: Iterable[str] = (),
    name: str | None = None,
    actor_type: str = "user",
) -> SigningKey:
    """Register ``actor_id`` with its test key (as ``governance actors add`` would), unless it
    is registered already; its key."""
    key = key_for(actor_id)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO actors (actor_id, name, type, roles, groups) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (actor_id) DO NOTHING",
            (actor_id, name or actor_id.title(), actor_type, list(roles), list(groups)),
        )
        conn.execute(
            "INSERT INTO actor_keys (key_id, actor_id, public_key) VALUES (%s, %s, %s) "
            "ON CONFLICT (key_id) DO NOTHING",
            (key.key_id, actor_id, key.public_key_b64),
        )
    with _lock:
        _registered.setdefault(database_url, set()).add(actor_id)
    return key


def _ensure_registered(actor_id: str) -> None:
    with _lock:
        missing = [url for url in _databases if actor_id not in _registered.get(url, set())]
    for url in missing:
        register(url, actor_id)


def sign(payload: Any, *, issued_at: datetime | None = None) -> Any:
    """``payload`` signed by its actor's test key (registered where needed); anything that is
    not a command object with an actor id, or is signed already, is returned as it is."""
    if not isinstance(payload, dict) or "auth" in payload:
        return payload
    actor = payload.get("actor")
    actor_id = actor.get("id") if isinstance(actor, Mapping) else None
    if not isinstance(actor_id, str) or not actor_id or actor_id in UNREGISTERED:
        return payload
    _ensure_registered(actor_id)
    try:
        return sign_command(payload, key_for(actor_id), audience=AUDIENCE, issued_at=issued_at)
    except ValueError:
        # Not canonicalisable, or otherwise unsignable: the test means to send it as it is.
        return payload


def sign_all(payloads: Iterable[Any]) -> list[Any]:
    return [sign(payload) for payload in payloads]


class Keyring(Mapping[str, SigningKey]):
    """Every test actor's key, for a client that signs as whichever actor a command names."""

    def __getitem__(self, actor_id: str) -> SigningKey:
        if actor_id in UNREGISTERED:
            raise KeyError(actor_id)
        _ensure_registered(actor_id)
        return key_for(actor_id)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def key_file(directory: Path, actor_id: str) -> Path:
    """A key file for ``actor_id`` in ``directory`` (written once), for the CLI."""
    path = directory / f"{actor_id}.key"
    if not path.exists():
        if actor_id != WORKER_ACTOR:  # the worker is registered with its own role on track
            _ensure_registered(actor_id)
        write_key_file(key_for(actor_id), path)
    return path


#: What signing adds to a command.
SIGNATURE_MEMBERS = ("auth", "audience", "issued_at")


def without_signature(payload: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``payload`` without what signing added, to compare a command as it was sent (or
    dead-lettered) with the one a test built."""
    if payload is None:
        return None
    return {k: v for k, v in payload.items() if k not in SIGNATURE_MEMBERS}


_key_dir: Path | None = None


def signing_env(args: Iterable[str], default_actor: str) -> dict[str, str]:
    """The environment a ``governance`` command line needs to sign as the actor it names
    (``--actor X``, else ``default_actor``): ``GOVERNANCE_SIGNING_KEY`` of that actor, who is
    registered in every tracked database."""
    words = list(args)
    actor = default_actor
    for index, word in enumerate(words[:-1]):
        if word == "--actor":
            actor = words[index + 1]
    if actor in UNREGISTERED:
        return {}
    # Registered before the command line signs with its key, as ``sign`` does: whether an
    # earlier test of this process happened to sign as the same actor must not matter.
    _ensure_registered(actor)
    return {"GOVERNANCE_SIGNING_KEY": str(key_file(_keys_directory(), actor))}
