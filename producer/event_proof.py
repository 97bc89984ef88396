"""Verifying outcome events: only an event signed by a registered worker is acted on.

Every worker signs the events it publishes with its own key (``"proof": {"key_id",
"signature"}``, Ed25519 over the RFC 8785 JSON of the event without ``proof``, see
:func:`governance.proof.event_signed_bytes`). Anyone who may publish to ``governance.events``
can otherwise forge an outcome: a gate that opened on a forged ``transition.applied`` would
let an unapproved change through. So every consumer in this library (subscriptions, replays,
:func:`producer.gate.wait_for_status`, the client's ``send_and_wait``) hands each event to an
:class:`EventVerifier` first, and never acts on one it refuses: a refused event is counted
(:attr:`EventVerifier.refused`, and the Prometheus counter
``governance_subscriber_events_refused_total``), logged, and dropped.

The trusted keys are the registry's keys of active actors holding the ``worker`` role
(:meth:`EventVerifier.registry`), or a set given explicitly where the client has no database
access (:meth:`EventVerifier.trusting`, or the file ``GOVERNANCE_EVENT_KEYS`` names).

Revocation: a key revoked before now is refused for every event delivered live (a worker
publishing now cannot legitimately sign with it, and a thief could back-date
``occurred_at``); an event read from the event log (history, where the database is the
source) is refused when its key was revoked at or before the event's ``occurred_at``, so
history signed before a key was rotated stays verifiable.

Development mode (``GOVERNANCE_AUTH=off``, or ``require_signed=False``): an event without a
``proof`` is accepted when it says ``"authenticated": false``, as a worker in development
mode without a key publishes; an event that carries a proof is verified all the same.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.codec import timestamp_from_wire
from governance.proof import PROOF_MEMBER, b64url_decode, event_signed_bytes

log = logging.getLogger(__name__)

#: The setting naming a file of trusted worker keys, for a client without database access.
KEYS_VARIABLE = "GOVERNANCE_EVENT_KEYS"

#: Why an event is refused (a closed set: the values of the refusal counter's label).
UNSIGNED = "unsigned"
MALFORMED = "malformed_proof"
UNKNOWN_KEY = "unknown_key"
REVOKED_KEY = "revoked_key"
BAD_SIGNATURE = "bad_signature"
REASONS = (UNSIGNED, MALFORMED, UNKNOWN_KEY, REVOKED_KEY, BAD_SIGNATURE)

_SIGNATURE_LENGTH = 64


_refused_metric: Any = None
_metric_lock = threading.Lock()


def _count_refusal(reason: str) -> None:
    """Add one to the process-wide Prometheus counter of refused events, made on the first
    refusal: importing prometheus_client fixes its value store for the process (a worker
    sets up its multiprocess store before that), so this module never imports it before."""
    global _refused_metric
    with _metric_lock:
        if _refused_metric is None:
            from prometheus_client import Counter as PrometheusCounter

            _refused_metric = PrometheusCounter(
                "governance_subscriber_events_refused",
                "Outcome events a subscriber ignored because their proof did not verify.",
                ["reason"],
            )
    _refused_metric.labels(reason).inc()


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A worker key events may be signed with: its id and raw 32-byte Ed25519 public key,
    and when it was revoked (None: it is not)."""

    key_id: str
    public_key: bytes
    actor_id: str | None = None
    revoked_at: datetime | None = None

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> TrustedKey:
        """A key from ``{"key_id", "public_key" (base64url), "actor_id"?, "revoked_at"?}``,
        the shape ``governance actors show --json`` gives a key; ValueError names what is
        wrong."""
        key_id = document.get("key_id")
        encoded = document.get("public_key")
        if not isinstance(key_id, str) or not key_id:
            raise ValueError("a trusted key needs its key_id")
        if not isinstance(encoded, str):
            raise ValueError(f"trusted key {key_id}: public_key must be base64url text")
        raw = b64url_decode(encoded)
        if len(raw) != 32:
            raise ValueError(f"trusted key {key_id}: an Ed25519 public key is 32 bytes")
        revoked = document.get("revoked_at")
        actor_id = document.get("actor_id")
        return cls(
            key_id=key_id,
            public_key=raw,
            actor_id=actor_id if isinstance(actor_id, str) else None,
            revoked_at=timestamp_from_wire(revoked) if isinstance(revoked, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`EventVerifier.check` made of an event: whether it may be acted on,
    whether its proof verified (False for an unsigned event accepted in development mode),
    and, when refused, why (one of :data:`REASONS`) with a sentence for the log."""

    accepted: bool
    verified: bool
    reason: str | None = None
    detail: str = ""


def load_keys_file(path: str | os.PathLike[str]) -> list[TrustedKey]:
    """The trusted keys of a JSON file: an array of keys (see :meth:`TrustedKey.from_dict`),
    or an object with such an array as ``keys``. ValueError names the file and the
    problem."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"trusted event keys {os.fspath(path)}: {exc}") from None
    if isinstance(document, Mapping):
        document = document.get("keys")
    if not isinstance(document, list):
        raise ValueError(f"trusted event keys {os.fspath(path)}: expected an array of keys")
    try:
        return [TrustedKey.from_dict(item) for item in document if isinstance(item, Mapping)]
    except ValueError as exc:
        raise ValueError(f"trusted event keys {os.fspath(path)}: {exc}") from None


class EventVerifier:
    """Judges outcome events by their ``proof`` against a set of trusted worker keys.

    ``keys`` is called for the set (at the first event, then again when an event names a key
    it does not hold, at most once per ``refresh_seconds``: a worker registered after the
    subscriber started is trusted from then on, and a flood of events naming made-up keys
    costs at most one read per interval). Thread-safe.
    """

    def __init__(
        self,
        keys: Callable[[], Iterable[TrustedKey]],
        *,
        require_signed: bool = True,
        refresh_seconds: float = 2.0,
        source: str = "the given keys",
    ) -> None:
        self._load = keys
        self.require_signed = require_signed
        self.refresh_seconds = refresh_seconds
        self.source = source
        self._keys: dict[str, TrustedKey] | None = None
        #: Whether the keys were read (or tried) yet, and when last.
        self._tried = False
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        #: How many events were accepted with a proof that verified.
        self.verified = 0
        #: How many unsigned events were accepted (development mode only).
        self.accepted_unsigned = 0
        #: How many events were refused, by reason (one of :data:`REASONS`).
        self.refused: Counter[str] = Counter()

    # ------------------------------------------------------------------ construction

    @classmethod
    def trusting(
        cls, keys: Iterable[TrustedKey | Mapping[str, Any]], *, require_signed: bool = True
    ) -> EventVerifier:
        """A verifier trusting exactly ``keys`` (for a client without database access)."""
        fixed = [k if isinstance(k, TrustedKey) else TrustedKey.from_dict(k) for k in keys]
        return cls(lambda: fixed, require_signed=require_signed, refresh_seconds=float("inf"))

    @classmethod
    def registry(cls, database_url: str, *, require_signed: bool | None = None) -> EventVerifier:
        """A verifier trusting the registry's keys of active actors with the ``worker`` role
        (read-only, through :meth:`producer.queries.Queries.worker_keys`).
        ``require_signed`` defaults to the client's ``GOVERNANCE_AUTH`` (signed unless
        ``off``)."""
        from producer.queries import Queries

        queries = Queries(database_url)
        return cls(
            queries.worker_keys,
            require_signed=_signed_mode() if require_signed is None else require_signed,
            source="the registry's worker keys",
        )

    @classmethod
    def from_environment(
        cls, database_url: str | None = None, environ: Mapping[str, str] | None = None
    ) -> EventVerifier:
        """The verifier a client gets when it names none: the keys of the file
        ``GOVERNANCE_EVENT_KEYS`` names when it is set, else the registry at ``database_url``
        (default ``GOVERNANCE_DATABASE_URL``, else the default database)."""
        env = os.environ if environ is None else environ
        signed = _signed_mode(env)
        keys_file = env.get(KEYS_VARIABLE)
        if keys_file:
            verifier = cls.trusting(load_keys_file(keys_file), require_signed=signed)
            verifier.source = f"the keys of {keys_file}"
            return verifier
        if database_url is None:
            from governance.topology import DEFAULT_DATABASE_URL

            database_url = env.get("GOVERNANCE_DATABASE_URL", DEFAULT_DATABASE_URL)
        return cls.registry(database_url, require_signed=signed)

    # ------------------------------------------------------------------ judging

    def check(self, event: Mapping[str, Any], *, live: bool = True) -> Verdict:
        """Judge ``event`` (nothing is counted; see :meth:`admit`). ``live``: it was
        delivered by the broker just now (False: read from the event log)."""
        proof = event.get(PROOF_MEMBER)
        if proof is None:
            if not self.require_signed and event.get("authenticated") is False:
                return Verdict(accepted=True, verified=False)
            return Verdict(False, False, UNSIGNED, "the event carries no proof")
        if not isinstance(proof, Mapping):
            return Verdict(False, False, MALFORMED, "proof is not an object")
        key_id, encoded = proof.get("key_id"), proof.get("signature")
        if not isinstance(key_id, str) or not isinstance(encoded, str):
            return Verdict(False, False, MALFORMED, "proof needs key_id and signature strings")
        try:
            signature = b64url_decode(encoded)
        except ValueError as exc:
            return Verdict(False, False, MALFORMED, f"signature: {exc}")
        if len(signature) != _SIGNATURE_LENGTH:
            return Verdict(False, False, MALFORMED, "an Ed25519 signature is 64 bytes")
        key = self._key(key_id)
        if key is None:
            return Verdict(False, False, UNKNOWN_KEY, f"key {key_id!r} is not among {self.source}")
        if key.revoked_at is not None and _revoked_for(key.revoked_at, event, live):
            return Verdict(False, False, REVOKED_KEY, f"key {key_id!r} was revoked")
        try:
            signed = event_signed_bytes(event)
            _public_key(key.public_key).verify(signature, signed)
        except (InvalidSignature, ValueError):
            return Verdict(
                False, False, BAD_SIGNATURE, f"the signature of key {key_id!r} does not hold"
            )
        return Verdict(accepted=True, verified=True)

    def admit(self, event: Mapping[str, Any], *, live: bool = True) -> bool:
        """Whether ``event`` may be acted on; a refusal is counted and logged."""
        return self.judge(event, live=live).accepted

    def judge(self, event: Mapping[str, Any], *, live: bool = True) -> Verdict:
        """:meth:`check` ``event``, counting the verdict, and logging a refusal."""
        verdict = self.check(event, live=live)
        with self._lock:
            if verdict.accepted:
                if verdict.verified:
                    self.verified += 1
                else:
                    self.accepted_unsigned += 1
                return verdict
            assert verdict.reason is not None
            self.refused[verdict.reason] += 1
        _count_refusal(verdict.reason)
        log.warning(
            "ignored outcome event %s (%s %s): %s",
            event.get("event_id"),
            event.get("event_type"),
            event.get("request_id"),
            verdict.detail,
        )
        return verdict

    @property
    def refused_total(self) -> int:
        """How many events were refused, whatever the reason."""
        with self._lock:
            return sum(self.refused.values())

    def _key(self, key_id: str) -> TrustedKey | None:
        with self._lock:
            keys = self._keys
            tried = self._tried
            due = time.monotonic() - self._loaded_at >= self.refresh_seconds
        if keys is not None and key_id in keys:
            return keys[key_id]
        if tried and not due:
            return None
        try:
            loaded = {key.key_id: key for key in self._load()}
        except Exception as exc:
            # Nothing can be verified without them: the event is refused as naming a key not
            # known to be trusted, and the next event tries again after the interval.
            log.warning("cannot read %s: %s", self.source, exc)
            with self._lock:
                self._tried, self._loaded_at = True, time.monotonic()
            return None
        with self._lock:
            self._keys = loaded
            self._tried, self._loaded_at = True, time.monotonic()
        return loaded.get(key_id)


@functools.lru_cache(maxsize=256)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _revoked_for(revoked_at: datetime, event: Mapping[str, Any], live: bool) -> bool:
    if live:
        return revoked_at <= datetime.now(UTC)
    occurred = event.get("occurred_at")
    try:
        occurred_at = timestamp_from_wire(occurred) if isinstance(occurred, str) else None
    except ValueError:
        occurred_at = None
    # An event whose time cannot be read cannot show it was signed before the revocation.
    return occurred_at is None or revoked_at <= occurred_at


def _signed_mode(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("GOVERNANCE_AUTH", "signed") != "off"
