"""An actor's Ed25519 signing key, and the key file it is kept in.

A key file is JSON: ``{"actor_id": "alice", "key_id": "…", "private_key": "<base64url of
the 32-byte seed>"}``. The public half is what an operator registers for the actor
(``governance actors add … --public-key``); the file itself never leaves its owner.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.proof import b64url_decode, b64url_encode

SEED_LENGTH = 32
#: How many characters of the public key's digest make a default key id: short enough to
#: type, long enough (96 bits) that two keys do not meet by chance.
KEY_ID_LENGTH = 16
_MAX_ID_LENGTH = 128
#: A key file is a few hundred bytes; anything much larger is not one.
_MAX_FILE_BYTES = 64 * 1024


class KeyFileError(Exception):
    """A key file that cannot be read, written or understood; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"key file {os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem


def default_key_id(public_key: bytes) -> str:
    """The key id a raw public key gets when none is chosen: the start of its base64url
    sha256."""
    return b64url_encode(hashlib.sha256(public_key).digest())[:KEY_ID_LENGTH]


def _check_identifier(value: object, what: str) -> str:
    # The same shape a command's identifiers must have, or the key could sign nothing.
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must not be blank")
    if len(value) > _MAX_ID_LENGTH:
        raise ValueError(f"{what} must be at most {_MAX_ID_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


@functools.lru_cache(maxsize=256)
def _private_key(seed: bytes) -> Ed25519PrivateKey:
    # Loading a seed derives its public key, which costs as much as a signature: a worker
    # signs every event with one key.
    return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An actor's private key: who it signs for, under which key id, and its 32-byte seed."""

    actor_id: str
    key_id: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_identifier(self.actor_id, "actor_id")
        _check_identifier(self.key_id, "key_id")
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_LENGTH:
            raise ValueError(f"the seed of an Ed25519 key must be exactly {SEED_LENGTH} bytes")

    def _private(self) -> Ed25519PrivateKey:
        return _private_key(self.seed)

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._private().public_key().public_bytes_raw()

    @property
    def public_key_b64(self) -> str:
        """The public key as the registry holds it: base64url, no padding."""
        return b64url_encode(self.public_key_bytes)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private().sign(data)


def generate(actor_id: str, key_id: str | None = None) -> SigningKey:
    """A new random key for ``actor_id``; ``key_id`` defaults to :func:`default_key_id`."""
    private = Ed25519PrivateKey.generate()
    if key_id is None:
        key_id = default_key_id(private.public_key().public_bytes_raw())
    return SigningKey(actor_id=actor_id, key_id=key_id, seed=private.private_bytes_raw())


def key_file_document(key: SigningKey) -> dict[str, str]:
    """The JSON object a key file holds."""
    return {
        "actor_id": key.actor_id,
        "key_id": key.key_id,
        "private_key": b64url_encode(key.seed),
    }


def write_key_file(key: SigningKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` to a new file readable by its owner only; an existing file is never
    overwritten (it may be the only copy of another key)."""
    text = json.dumps(key_file_document(key), indent=2) + "\n"
    try:
        # O_EXCL: refuse an existing file, or a symlink planted where the file will be.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(path, "already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot create it: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # The mode given to open() is narrowed by the umask, never widened: set it anyway.
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
    except OSError as exc:
        # A half-written key file would only fail later, far from the cause.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise KeyFileError(path, f"cannot write it: {exc.strerror or exc}") from exc


def _field(document: dict[str, Any], name: str, path: str | os.PathLike[str]) -> str:
    if name not in document:
        raise KeyFileError(path, f"missing field {name!r}")
    value = document[name]
    if not isinstance(value, str):
        raise KeyFileError(path, f"field {name!r} must be a string")
    return value


def load_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """The key kept in ``path``; any problem is a :class:`KeyFileError` naming the file."""
    try:
        with Path(path).open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(path, f"cannot read it: {exc.strerror or exc}") from exc
    if os.name == "posix" and mode & 0o077:
        # As ssh refuses a private key others may read: the key may already be copied.
        raise KeyFileError(
            path,
            f"is accessible by group or others (mode {stat.S_IMODE(mode):04o}); a private "
            "key must be readable by its owner only: chmod 600 it (and consider it leaked)",
        )
    if len(raw) > _MAX_FILE_BYTES:
        raise KeyFileError(path, f"larger than {_MAX_FILE_BYTES} bytes; not a key file")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(path, f"not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise KeyFileError(path, "expected a JSON object with actor_id, key_id and private_key")
    actor_id = _field(document, "actor_id", path)
    key_id = _field(document, "key_id", path)
    encoded = _field(document, "private_key", path)
    try:
        seed = b64url_decode(encoded)
    except ValueError:
        raise KeyFileError(path, "private_key is not base64url without padding") from None
    if len(seed) != SEED_LENGTH:
        raise KeyFileError(
            path, f"private_key must be the {SEED_LENGTH}-byte seed, got {len(seed)} bytes"
        )
    try:
        return SigningKey(actor_id=actor_id, key_id=key_id, seed=seed)
    except ValueError as exc:
        raise KeyFileError(path, str(exc)) from None


#: The length of a raw Ed25519 public key, and of its base64url spelling without padding.
PUBLIC_KEY_LENGTH = 32
_PUBLIC_KEY_CHARACTERS = 43


def _raw_public_key(text: str) -> bytes | None:
    """The 32 bytes ``text`` spells as base64url without padding, or None."""
    if len(text) != _PUBLIC_KEY_CHARACTERS:
        return None
    try:
        raw = b64url_decode(text)
    except ValueError:
        return None
    return raw if len(raw) == PUBLIC_KEY_LENGTH else None


def load_public_key(value: str) -> str:
    """The Ed25519 public key ``value`` names, as base64url without padding.

    ``value`` is the key itself (43 characters of base64url, as ``governance keygen``
    prints it), or a file: a key file (its public half is derived from the private key), or
    a file holding the base64url public key alone (say, keygen's output saved). Raises
    :class:`KeyFileError` naming the file, or ValueError for a value that is neither.
    """
    raw = _raw_public_key(value)
    if raw is not None:
        return b64url_encode(raw)
    path = Path(value)
    if not path.exists():
        raise ValueError(
            f"{value!r} is neither a base64url Ed25519 public key nor an existing file"
        )
    try:
        with path.open("rb") as handle:
            content = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(path, f"cannot read it: {exc.strerror or exc}") from exc
    try:
        text = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyFileError(path, "neither a key file nor a public key") from None
    raw = _raw_public_key(text)
    if raw is not None:
        return b64url_encode(raw)
    if text.startswith("{"):
        return load_key_file(path).public_key_b64
    raise KeyFileError(
        path, "neither a key file nor a base64url Ed25519 public key (43 characters)"
    )
