"""What proves a command, an outcome event and a request's history: the bytes a command's
and an event's signature cover, and the hash chain over a request's decisions.

Both rest on RFC 8785 (JCS) canonical JSON, so that key order and whitespace never change
what is signed or hashed. Pure: no keys and no signature checks here (the worker and the
producer hold those); only the bytes they agree on.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
import rfc8785

from governance.codec import timestamp_to_wire

#: The member of a command that carries its signature, and so cannot be signed itself.
AUTH_MEMBER = "auth"
#: The member of an outcome event that carries the publishing worker's signature.
PROOF_MEMBER = "proof"

#: The fields of a decision as it is chained, in the order they are documented.
CHAINED_FIELDS: tuple[str, ...] = (
    "request_id",
    "revision",
    "position",
    "command_id",
    "category",
    "type",
    "actor",
    "reason",
    "metadata",
    "occurred_at",
)
_ACTOR_FIELDS = ("id", "name", "type")
_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url_encode(data: bytes) -> str:
    """``data`` as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of base64url text without padding.

    Raises ValueError for anything else: padding characters, characters outside the
    base64url alphabet (standard base64's ``+`` and ``/`` too), a length no encoding has, or
    leftover bits that are not zero (so every byte string has exactly one accepted text).
    """
    if not isinstance(text, str):
        raise ValueError(f"expected base64url text, got {type(text).__name__}")
    if "=" in text:
        raise ValueError("base64url text must not be padded")
    if not _B64URL_ALPHABET.issuperset(text):
        raise ValueError("not base64url: characters outside A-Z a-z 0-9 - _")
    if len(text) % 4 == 1:
        raise ValueError(f"not base64url: no encoding is {len(text)} characters long")
    # The checks above leave nothing for the decoder to refuse (its binascii.Error would be a
    # ValueError all the same).
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if b64url_encode(data) != text:
        # The last character carried bits beyond the data: another spelling of the same bytes.
        raise ValueError("not base64url: non-canonical final character")
    return data


#: Compact JSON with every object's keys sorted: RFC 8785 itself for the values
#: :func:`_plain` admits, at a fortieth of the pure-Python canonicaliser's cost (a worker
#: canonicalises every event it signs and every command it verifies).
_SORTED_JSON = msgspec.json.Encoder(order="sorted")
_MAX_SAFE_INTEGER = 2**53 - 1
_LAST_BMP = "\uffff"


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only what RFC 8785 and sorted compact JSON write alike:
    strings, integers within ±(2**53-1), booleans, null, arrays, and objects whose keys are
    strings of the Basic Multilingual Plane (where UTF-16 order, which RFC 8785 sorts by, is
    code point order). Not floats: ECMAScript writes their exponents otherwise."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                return False
        elif kind is dict:
            for key in item:
                if type(key) is not str or (key and max(key) > _LAST_BMP):
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        else:
            return False
    return True


def _jcs(value: Any, what: str) -> bytes:
    """RFC 8785 bytes of ``value``, or ValueError saying why ``what`` has none."""
    if _plain(value):
        try:
            return _SORTED_JSON.encode(value)
        except (UnicodeEncodeError, RecursionError):
            pass  # a lone surrogate, or nested too deep: the canonicaliser says which
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        # Integers beyond ±(2**53-1), non-finite floats, lone surrogates, non-string keys.
        raise ValueError(f"{what} cannot be canonicalised (RFC 8785): {exc}") from exc
    except RecursionError as exc:
        raise ValueError(f"{what} cannot be canonicalised (RFC 8785): nested too deep") from exc


def signed_bytes(command: Mapping[str, Any]) -> bytes:
    """The bytes a command's signature covers: the RFC 8785 canonical JSON (UTF-8) of the
    command object as received, without its ``auth`` member.

    Raises ValueError when the object cannot be canonicalised (RFC 8785 refuses, for
    instance, integers beyond ±(2**53-1) and non-finite floats).
    """
    unsigned = {key: value for key, value in command.items() if key != AUTH_MEMBER}
    return _jcs(unsigned, "the command")


def command_sha256(command: Mapping[str, Any]) -> str | None:
    """The fingerprint of a command message as sent or received: the SHA-256 (hex) of the
    RFC 8785 canonical JSON (UTF-8) of the whole object, ``auth`` included; None when it
    cannot be canonicalised.

    An answer to a command whose sender was not proved carries it (``command_sha256``), so
    that the sender of that very message can tell its answer from the answer to another
    message claiming the same ``command_id`` and actor.
    """
    try:
        return hashlib.sha256(_jcs(dict(command), "the command")).hexdigest()
    except (ValueError, TypeError):
        return None


def event_signed_bytes(event: Mapping[str, Any]) -> bytes:
    """The bytes an outcome event's ``proof`` signature covers: the RFC 8785 canonical JSON
    (UTF-8) of the event as published (``sequence`` included), without its ``proof`` member.

    Raises ValueError when the event cannot be canonicalised.
    """
    unsigned = {key: value for key, value in event.items() if key != PROOF_MEMBER}
    return _jcs(unsigned, "the event")


def chained_decision(
    request_id: str,
    revision: int,
    position: int,
    command_id: str,
    decision_dict: Mapping[str, Any],
) -> dict[str, Any]:
    """The decision as it is chained: where it stands in the history (``request_id``,
    ``revision``, ``position``, ``command_id``) and what it says.

    ``decision_dict`` is a decision in :func:`governance.codec.decision_to_dict`'s form (or
    a stored row with those keys); only the chained fields are taken from it, and an
    ``occurred_at`` read back as a datetime is put in the wire form, so the writer and a
    verifier reading the database hash the same dictionary.
    """
    actor = decision_dict["actor"]
    occurred_at = decision_dict["occurred_at"]
    return {
        "request_id": request_id,
        "revision": revision,
        "position": position,
        "command_id": command_id,
        "category": decision_dict["category"],
        "type": decision_dict["type"],
        "actor": {name: actor.get(name) for name in _ACTOR_FIELDS},
        "reason": decision_dict.get("reason"),
        "metadata": decision_dict.get("metadata") or {},
        "occurred_at": timestamp_to_wire(occurred_at)
        if isinstance(occurred_at, datetime)
        else occurred_at,
    }


def decision_digest_material(decision: Mapping[str, Any]) -> bytes:
    """The RFC 8785 bytes of a decision as stored (see :func:`chained_decision`).

    Raises ValueError when the decision cannot be canonicalised.
    """
    return _jcs(dict(decision), "the decision")


def chain_hash(previous: str | None, decision: Mapping[str, Any]) -> str:
    """The chain hash of ``decision``: hex sha256 of the previous chain hash of the request
    (ASCII; nothing for its first decision) followed by the decision's RFC 8785 bytes."""
    material = (previous or "").encode("ascii") + decision_digest_material(decision)
    return hashlib.sha256(material).hexdigest()
