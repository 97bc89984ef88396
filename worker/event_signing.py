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
