"""The console's settings: its origin's host is the passkeys' relying party, and its session
cookie is ``Secure`` everywhere but on localhost."""

from __future__ import annotations

import pytest

from governance_console.app import ConsoleSettings


def settings(origin: str) -> ConsoleSettings:
    return ConsoleSettings("postgresql://db/x", "amqp://mq//", origin=origin)


def test_the_relying_party_is_the_host_of_the_console_origin() -> None:
    assert settings("https://approve.example.org").rp_id == "approve.example.org"
    assert settings("http://localhost:8080").rp_id == "localhost"


@pytest.mark.parametrize(
    ("origin", "secure"),
    [
        ("https://approve.example.org", True),
        ("http://console.internal:8080", True),
        ("http://localhost:8080", False),
        ("http://127.0.0.1:8080", False),
    ],
)
def test_the_session_cookie_is_secure_except_on_localhost(origin: str, secure: bool) -> None:
    assert settings(origin).secure_cookie is secure
