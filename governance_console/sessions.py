"""Who is signed in, and the ceremonies under way: kept in the console's memory only.

A session is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure``
except on localhost) with its own CSRF token, which every state-changing request must send
back in a header. A WebAuthn challenge the console issued is kept until it is used once or
expires.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

#: How long a signed-in session lasts, and a sign-in or enrollment ceremony may take.
SESSION_SECONDS = 8 * 3600
CEREMONY_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in actor, with the CSRF token its pages carry."""

    actor_id: str
    key_id: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Sessions and pending challenges, by their random tokens."""

    _sessions: dict[str, Session] = field(default_factory=dict)
    _challenges: dict[str, tuple[bytes, str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, actor_id: str, key_id: str) -> tuple[str, Session]:
        """A new session for ``actor_id``: its cookie token and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(
            actor_id, key_id, secrets.token_urlsafe(32), time.monotonic() + SESSION_SECONDS
        )
        with self._lock:
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of cookie ``token``, or None."""
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires < time.monotonic():
                del self._sessions[token]
                return None
        return session

    def close(self, token: str | None) -> None:
        """End the session of ``token`` (sign-out)."""
        with self._lock:
            self._sessions.pop(token or "", None)

    def challenge(self, challenge: bytes, purpose: str) -> str:
        """Keep ``challenge`` for ``purpose`` (a sign-in, or an enrollment's token hash);
        the id the browser hands back with its answer."""
        handle = secrets.token_urlsafe(16)
        with self._lock:
            now = time.monotonic()
            for old in [h for h, (_, _, t) in self._challenges.items() if t < now]:
                del self._challenges[old]
            self._challenges[handle] = (challenge, purpose, now + CEREMONY_SECONDS)
        return handle

    def take_challenge(self, handle: str, purpose: str) -> bytes | None:
        """The challenge kept under ``handle`` for ``purpose``, used up; None when there is
        none (unknown, expired, used, or kept for another purpose)."""
        with self._lock:
            kept = self._challenges.pop(handle, None)
        if kept is None or kept[1] != purpose or kept[2] < time.monotonic():
            return None
        return kept[0]
