"""The worker's own key, which signs every outcome event it publishes.

A worker is an actor of its own (registered with the ``worker`` role) whose key file is
``GOVERNANCE_WORKER_KEY``. It is read once, when the worker starts (:func:`install`), and held
for the life of the process, so that forked pool children sign with it too. Subscribers
verify an event's ``proof`` against the registry's worker keys; a worker without a key (only
allowed in development mode) publishes its events unsigned.

The signature is made where the event is built, once, and stored with it in the outbox
(:class:`worker.writes.RunWrites`): whoever publishes the row later (the writer, a batch, a
redelivery, the relay of another worker) sends the very same signed event.
"""

from __future__ import annotations

import os

import psycopg

from governance.proof import b64url_encode
from producer.keys import KeyFileError, SigningKey, load_key_file

#: The setting naming the worker's key file.
KEY_VARIABLE = "GOVERNANCE_WORKER_KEY"

_key: SigningKey | None = None


class WorkerKeyMissing(Exception):
    """The worker cannot start as configured; the message is the one line saying why."""


def install(key: SigningKey | None) -> None:
    """Sign this process's events with ``key`` from now on (None: unsigned)."""
    global _key
    _key = key


def installed() -> SigningKey | None:
    """The key this process signs its events with, if any."""
    return _key


def load(path: str | None, *, signed: bool) -> SigningKey | None:
    """The worker key kept in ``path``, or None when there is none and ``signed`` is False.

    Raises :class:`WorkerKeyMissing` (one line: what is wrong and what to do) when a worker
    in signed mode has no key, or the file cannot be used.
    """
    if not path:
        if signed:
            raise WorkerKeyMissing(
                f"{KEY_VARIABLE} is not set: in signed mode (GOVERNANCE_AUTH=signed, the "
                "default) a worker signs every event it publishes. Make a key with "
                "`governance keygen --actor worker-1 --out worker.key`, register it with "
                "`governance actors add worker-1 --type service --role worker --public-key "
                f"<printed key>` and set {KEY_VARIABLE}=worker.key"
            )
        return None
    try:
        return load_key_file(os.fspath(path))
    except KeyFileError as exc:
        raise WorkerKeyMissing(f"{KEY_VARIABLE}: {exc}") from None


_REGISTERED = """
SELECT k.actor_id, k.public_key, k.revoked_at IS NOT NULL, a.active, 'worker' = ANY(a.roles)
FROM actor_keys AS k JOIN actors AS a ON a.actor_id = k.actor_id
WHERE k.key_id = %(key_id)s
"""


def registration_problem(database_url: str, key: SigningKey) -> str | None:
    """Why subscribers would ignore the events ``key`` signs, as the registry stands now
    (None: they would trust them, or the registry cannot be read yet)."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(_REGISTERED, {"key_id": key.key_id}).fetchone()
    except psycopg.Error:
        return None  # the database is not there yet: the worker waits for it as it does
    if row is None:
        return f"key {key.key_id} is not registered"
    actor_id, public_key, revoked, active, worker = row
    if public_key != b64url_encode(key.public_key_bytes):
        return f"key {key.key_id} is registered with another public key"
    if revoked:
        return f"key {key.key_id} was revoked"
    if not active:
        return f"actor {actor_id} is deactivated"
    if not worker:
        return f"actor {actor_id} does not hold the worker role"
    return None
