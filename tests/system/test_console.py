"""The approver console, as a person uses it: Debian's Chromium (headless, through
Playwright) with a virtual passkey authenticator, the console, a real worker, PostgreSQL and
RabbitMQ. Approvers enroll by a one-time link, sign in, see their inbox, approve, and see
the outcome live; what they signed verifies without the console."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from governance_console.app import ConsoleSettings
from tests.support.commands import new_id, submit
from tests.support.console import Approver, chromium_path, served_console
from tests.support.database_logins import reader_login_url
from tests.support.identities import register
from tests.support.ports import reserve_port
from tests.support.processes import PROJECT_ROOT, WorkerProcess, service_env
from tests.support.services import spare_vhost
from tests.support.signed import apply_command
from worker import enrollment

pytestmark = [pytest.mark.system]


class Deployment:
    """The services of this module: a vhost of its own, a worker accepting the console's
    origin, and the console itself."""

    def __init__(self, database_url: str, broker_url: str, origin: str, port: int) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.origin = origin
        self.port = port
        self.hooks: dict[str, Any] = {}


@pytest.fixture(scope="module")
def deployment(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, broker_url: str
) -> Iterator[Deployment]:
    port = reserve_port()
    origin = f"http://localhost:{port}"
    log_path = Path(tmp_path_factory.mktemp("console")) / "worker.log"
    with spare_vhost(broker_url) as vhost:
        worker = WorkerProcess(
            database_url,
            vhost,
            concurrency=2,
            log_path=log_path,
            extra_env={"GOVERNANCE_WEBAUTHN_ORIGINS": origin},
        )
        try:
            worker.wait_ready()
            found = Deployment(database_url, vhost, origin, port)
            settings = ConsoleSettings(
                # As a deployment runs it: a member of the reader role, no registry write.
                reader_login_url(database_url),
                vhost,
                origin=origin,
                alter_before_relay=lambda command: found.hooks.get("alter", _same)(command),
            )
            with served_console(settings, port):
                yield found
        finally:
            worker.stop()


def _same(command: dict[str, Any]) -> dict[str, Any]:
    return command


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def approvers(browser: Any, deployment: Deployment) -> Iterator[list[Approver]]:
    opened: list[Approver] = []

    yield opened
    for approver in opened:
        approver.close()


def signed_in_approver(
    deployment: Deployment,
    browser: Any,
    opened: list[Approver],
    groups: tuple[str, ...] = (),
) -> tuple[str, Approver]:
    """A new approver, registered, enrolled through a link, signed in."""
    actor_id = new_id("approver")
    register(deployment.database_url, actor_id, roles=("approver",), groups=groups)
    with psycopg.connect(deployment.database_url, autocommit=True) as conn:
        link = enrollment.issue_link(conn, actor_id)
    approver = Approver(browser, deployment.origin)
    opened.append(approver)
    approver.enroll(f"{deployment.origin}/enroll/{link.token}")
    approver.sign_in()
    return actor_id, approver


def pending_request(database_url: str, requirements: list[dict[str, Any]]) -> str:
    request_id = new_id()
    with psycopg.connect(database_url, autocommit=True) as conn:
        outcome = apply_command(
            conn,
            submit(request_id, actor="requester", requirements=requirements),
        )
    assert outcome.applied, outcome.event
    return request_id


def governance(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=PROJECT_ROOT,
        env=service_env(
            deployment.database_url,
            deployment.broker_url,
            GOVERNANCE_WEBAUTHN_ORIGINS=deployment.origin,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_approver_enrolls_signs_in_approves_from_the_inbox_and_the_decision_verifies(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    actor_id, alice = signed_in_approver(deployment, browser, approvers)
    request_id = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
    )

    alice.open_request(request_id)
    shown = json.loads(alice.review("Approve"))
    alice.sign_and_send()

    assert shown["type"] == "approve_requirement"
    assert shown["expected_revision"] == 1
    assert "applied" in alice.outcome("applied")
    verified = governance(deployment, "verify", request_id, "--require-signed")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    alice.page.reload()
    assert alice.page.locator("#verify").inner_text() == "verified: every decision holds"


def test_the_inbox_lists_what_the_approver_may_decide_now(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    actor_id, alice = signed_in_approver(deployment, browser, approvers)
    mine = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
    )
    others = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": "someone-else"}]
    )

    alice.page.goto(f"{deployment.origin}/")
    table = alice.page.get_by_role("table", name="Requests you may decide now")

    assert mine in table.inner_text()
    assert others not in table.inner_text()


def test_two_approvers_on_one_revision_one_applies_the_other_sees_the_conflict_reloaded(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    group = new_id("cab")
    _, first = signed_in_approver(deployment, browser, approvers, groups=(group,))
    _, second = signed_in_approver(deployment, browser, approvers, groups=(group,))
    request_id = pending_request(
        deployment.database_url,
        [{"approval_id": "ap-1", "approver_group": group, "min_approvals": 2}],
    )
    first.open_request(request_id)
    second.open_request(request_id)
    first.review("Approve")
    second.review("Approve")

    first.sign_and_send()
    first.outcome("applied")
    second.sign_and_send()

    assert "the request changed; review it again" in second.outcome("concurrency_conflict")
    assert second.page.locator("#revision").inner_text() == "2"


def test_a_two_of_n_group_requirement_is_completed_by_two_browsers(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    group = new_id("cab")
    _, first = signed_in_approver(deployment, browser, approvers, groups=(group,))
    _, second = signed_in_approver(deployment, browser, approvers, groups=(group,))
    request_id = pending_request(
        deployment.database_url,
        [{"approval_id": "ap-1", "approver_group": group, "min_approvals": 2}],
    )

    first.open_request(request_id)
    first.review("Approve")
    first.sign_and_send()
    first.outcome("applied")
    second.open_request(request_id)
    second.review("Approve")
    second.sign_and_send()

    assert "the request is approved" in second.outcome("applied")


def test_a_console_that_alters_a_command_before_relaying_it_gets_unauthenticated(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    actor_id, alice = signed_in_approver(deployment, browser, approvers)
    request_id = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
    )
    deployment.hooks["alter"] = lambda command: {**command, "reason": "the console's own"}
    try:
        alice.open_request(request_id)
        alice.review("Approve")
        alice.sign_and_send()
        refused = alice.outcome("unauthenticated")
    finally:
        deployment.hooks.pop("alter")

    assert "clientDataJSON.challenge" in refused


def test_an_approval_signed_at_an_origin_the_workers_do_not_accept_is_unauthenticated(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    # Given a second console, at an origin the workers were not told to accept (the same
    # relying party, localhost, so the passkey it enrolls is a valid one)
    port = reserve_port()
    elsewhere = f"http://localhost:{port}"
    settings = ConsoleSettings(
        reader_login_url(deployment.database_url), deployment.broker_url, origin=elsewhere
    )
    with served_console(settings, port):
        actor_id = new_id("approver")
        register(deployment.database_url, actor_id, roles=("approver",))
        with psycopg.connect(deployment.database_url, autocommit=True) as conn:
            link = enrollment.issue_link(conn, actor_id)
        alice = Approver(browser, elsewhere)
        approvers.append(alice)
        alice.enroll(f"{elsewhere}/enroll/{link.token}")
        alice.sign_in()
        request_id = pending_request(
            deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
        )
        # When an approver approves there with a real passkey
        alice.open_request(request_id)
        alice.review("Approve")
        alice.sign_and_send()
        refused = alice.outcome("unauthenticated")

    # Then the worker refuses it, naming the check
    assert "clientDataJSON.origin" in refused


def test_an_export_of_a_passkey_approved_request_verifies_with_no_database(
    deployment: Deployment, browser: Any, approvers: list[Approver], tmp_path: Path
) -> None:
    actor_id, alice = signed_in_approver(deployment, browser, approvers)
    request_id = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
    )
    alice.open_request(request_id)
    alice.review("Approve")
    alice.sign_and_send()
    alice.outcome("applied")
    exported = governance(deployment, "export", request_id)
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "export.json"
    path.write_text(exported.stdout)

    verified = subprocess.run(
        [sys.executable, "-m", "governance_cli.main", "verify", "--file", str(path)],
        cwd=PROJECT_ROOT,
        env=service_env(
            "postgresql://nobody@127.0.0.1:1/none",
            "amqp://nobody@127.0.0.1:1/none",
            GOVERNANCE_WEBAUTHN_ORIGINS=deployment.origin,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_session_cookie_is_http_only_and_same_site_strict(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    _, alice = signed_in_approver(deployment, browser, approvers)

    (cookie,) = [c for c in alice.context.cookies() if c["name"] == "governance_session"]

    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    # Served on localhost, where browsers allow passkeys without TLS: Secure is off there only.
    assert cookie["secure"] is False


def test_every_page_carries_a_content_security_policy_without_inline_script(
    deployment: Deployment,
) -> None:
    with urllib.request.urlopen(f"{deployment.origin}/signin", timeout=30) as response:
        policy = response.headers["Content-Security-Policy"]
        page = response.read().decode()

    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "<script>" not in page and "<script " in page  # only the console's own file


def test_a_relay_without_the_csrf_token_is_refused(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    _, alice = signed_in_approver(deployment, browser, approvers)

    answer = alice.page.evaluate(
        """async () => {
            const r = await fetch('/relay', {method: 'POST', body: '{}',
                headers: {'Content-Type': 'application/json'}});
            return r.status;
        }"""
    )

    assert answer == 403


def test_an_enrollment_link_opened_a_second_time_enrolls_nothing(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    actor_id = new_id("approver")
    register(deployment.database_url, actor_id, roles=("approver",))
    with psycopg.connect(deployment.database_url, autocommit=True) as conn:
        link = enrollment.issue_link(conn, actor_id)
    first = Approver(browser, deployment.origin)
    approvers.append(first)
    first.enroll(f"{deployment.origin}/enroll/{link.token}")

    first.page.goto(f"{deployment.origin}/enroll/{link.token}")

    assert "already used" in first.page.get_by_role("alert").inner_text()


def test_the_approve_flow_works_with_the_keyboard_alone(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    actor_id, alice = signed_in_approver(deployment, browser, approvers)
    request_id = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
    )
    alice.open_request(request_id)
    page = alice.page

    page.get_by_label("Reason (optional)").focus()
    page.keyboard.type("checked the plan")
    page.keyboard.press("Tab")  # to Approve
    page.keyboard.press("Enter")
    # The review takes the focus to its own button: Enter signs and sends.
    page.keyboard.press("Enter")

    assert "applied" in alice.outcome("applied")


def test_an_approver_rejects_and_the_request_is_rejected_live(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    actor_id, alice = signed_in_approver(deployment, browser, approvers)
    request_id = pending_request(
        deployment.database_url, [{"approval_id": "ap-1", "approver_id": actor_id}]
    )

    alice.open_request(request_id)
    shown = json.loads(alice.review("Reject"))
    alice.sign_and_send()

    assert shown["type"] == "reject_requirement"
    assert "the request is rejected" in alice.outcome("applied")


def test_governance_console_serves_the_console_on_its_bind_address(
    deployment: Deployment,
) -> None:
    port = reserve_port()
    console = subprocess.Popen(
        [sys.executable, "-m", "governance_cli.main", "console"],
        cwd=PROJECT_ROOT,
        env=service_env(
            deployment.database_url,
            deployment.broker_url,
            GOVERNANCE_CONSOLE_BIND=f"127.0.0.1:{port}",
            GOVERNANCE_CONSOLE_ORIGIN=f"http://localhost:{port}",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        page = _first_answer(f"http://127.0.0.1:{port}/signin", console)
    finally:
        console.terminate()
        console.wait(30)

    assert "Sign in with passkey" in page


def _first_answer(url: str, process: subprocess.Popen[bytes]) -> str:
    """The page at ``url`` once the process serves it (bounded by the process's start)."""
    import time
    import urllib.error

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr and process.stderr.read().decode()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered at {url}")


def test_the_inbox_drops_a_request_decided_elsewhere_without_a_reload(
    deployment: Deployment, browser: Any, approvers: list[Approver]
) -> None:
    group = new_id("cab")
    _, alice = signed_in_approver(deployment, browser, approvers, groups=(group,))
    _, bob = signed_in_approver(deployment, browser, approvers, groups=(group,))
    request_id = pending_request(
        deployment.database_url,
        [{"approval_id": "ap-1", "approver_group": group, "min_approvals": 1}],
    )
    alice.page.goto(f"{deployment.origin}/")
    listed = alice.page.get_by_role("link", name=request_id)
    listed.wait_for()
    alice.page.locator('#inbox-live[data-live="open"]').wait_for()

    bob.open_request(request_id)
    bob.review("Approve")
    bob.sign_and_send()
    bob.outcome("applied")

    listed.wait_for(state="detached")
    assert alice.page.locator("#empty").inner_text() == "Nothing waits for your decision."
