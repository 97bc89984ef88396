"""The approver console as the end-to-end tests drive it: the console served in this
process (uvicorn in a thread, so a test may give it a hook), Debian's Chromium through
Playwright, and per approver a browser context with a CDP virtual authenticator (CTAP2,
internal transport, resident keys, user verification)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from governance_console.app import ConsoleSettings, create_app
from tests.support.services import unavailable

#: Bounds every wait on a page (milliseconds, as Playwright counts).
PAGE_PATIENCE_MS = 30_000


def chromium_path() -> str:
    """Debian's Chromium (Playwright's own browser download is not used)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("Debian's chromium is not installed (apt-get install -y chromium)")
    raise AssertionError("unreachable")


@contextmanager
def served_console(settings: ConsoleSettings, port: int) -> Iterator[Any]:
    """The console on 127.0.0.1:``port`` until the block ends; its application."""
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    if not app.state.outcomes.ready.wait(30):
        raise RuntimeError("the console's outcome subscription did not start")
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(30)


class Approver:
    """One person at one browser: a context of their own and a passkey authenticator."""

    def __init__(self, browser: Any, origin: str) -> None:
        self.origin = origin
        self.context = browser.new_context()
        self.context.set_default_timeout(PAGE_PATIENCE_MS)
        self.page = self.context.new_page()
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable")
        self.authenticator = self.cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )["authenticatorId"]

    def enroll(self, link: str) -> None:
        self.page.goto(link)
        self.page.get_by_role("button", name="Create passkey").click()
        self.page.get_by_role("status").filter(has_text="Passkey enrolled").wait_for()

    def sign_in(self) -> None:
        self.page.goto(f"{self.origin}/signin")
        self.page.get_by_role("button", name="Sign in with passkey").click()
        self.page.wait_for_url(f"{self.origin}/")

    def open_request(self, request_id: str) -> None:
        self.page.goto(f"{self.origin}/")
        self.page.get_by_role("link", name=request_id).click()
        self.page.wait_for_url(f"{self.origin}/requests/{request_id}")

    def review(self, decision: str = "Approve") -> str:
        """Click the decision; what the page says will be signed."""
        self.page.get_by_role("button", name=decision, exact=True).click()
        return str(self.page.locator("#to-sign").inner_text())

    def sign_and_send(self) -> None:
        self.page.get_by_role("button", name="Sign with passkey and send").click()

    def outcome(self, containing: str) -> str:
        """The outcome line once it says ``containing``."""
        line = self.page.locator("#outcome").filter(has_text=containing)
        line.wait_for()
        return str(line.inner_text())

    def close(self) -> None:
        self.context.close()
