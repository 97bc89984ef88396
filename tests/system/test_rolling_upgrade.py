"""A rolling upgrade: the previous release's workers keep applying commands while this
release's ``governance migrate`` brings the schema forward under them, and nothing is parked.

The previous release is this repository's own history: the state of the code before the
newest migration was added (a ``git worktree`` of that commit), run from its checkout.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest

from governance.topology import DEAD_LETTER_QUEUE
from producer import GovernanceClient
from tests.support import identities
from tests.support.commands import new_id
from tests.support.identities import Keyring
from tests.support.policies import apply_policy
from tests.support.processes import PROJECT_ROOT, WorkerProcess, service_env
from tests.support.services import fresh_database, spare_vhost
from worker.startup import schema_head

pytestmark = pytest.mark.system

MIGRATIONS = "worker/migrations/versions"
#: Commands are sent in waves of this size, each awaited, before, during and after the
#: migration: WAVES_AFTER waves once it is done, at most MAX_COMMANDS in all.
WAVE = 10
WAVES_AFTER = 3
MAX_COMMANDS = 2_000


def submit(client: GovernanceClient) -> Any:
    return client.submit(
        new_id("upgrade"),
        state_id="cfg",
        state_type="config",
        mutation_type="update",
        intent={"operation_name": "raise-limit"},
        actor="pipeline",
        pending_reason="quota",
    )


def git(*args: str, cwd: Path = PROJECT_ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A checkout of the code as it was before the newest migration was added."""
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("needs the project's git history")
    added = git("log", "--first-parent", "--diff-filter=A", "-1", "--format=%H", "--", MIGRATIONS)
    where = tmp_path_factory.mktemp("previous") / "release"
    git("worktree", "add", "--detach", str(where), f"{added}^1")
    try:
        yield where
    finally:
        git("worktree", "remove", "--force", str(where))


def governance(release: Path, database_url: str, broker_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=release,
        env=service_env(database_url, broker_url, PYTHONPATH=str(release)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def dead_letters(broker_url: str) -> int:
    with kombu.Connection(broker_url) as conn:
        declared = conn.default_channel.queue_declare(DEAD_LETTER_QUEUE, passive=True)
    return int(declared.message_count)


def test_the_previous_release_s_workers_go_on_while_migrate_moves_the_schema(
    postgres_server_url: str, broker_url: str, previous_release: Path, tmp_path: Path
) -> None:
    with (
        fresh_database(postgres_server_url) as url,
        contextlib.ExitStack() as stack,
        spare_vhost(broker_url) as vhost,
    ):
        # Given a deployment of the previous release, its workers applying commands
        governance(previous_release, url, vhost, "migrate")
        apply_policy(url)
        identities.track(url)
        # (untracked before the database is dropped: the tests' signing registers actors in
        # every tracked database)
        stack.callback(identities.untrack, url)
        worker = WorkerProcess(
            url, vhost, log_path=tmp_path / "worker.log", release=previous_release, as_owner=True
        )
        try:
            worker.wait_ready(60)
            outcomes: list[dict[str, Any] | None] = []
            migrated = threading.Event()
            with GovernanceClient(vhost, url, signing_key=Keyring(), timeout=60) as client:

                def send_waves() -> None:
                    # Waves of commands until the migration is done, and a few more after.
                    after = 0
                    while after < WAVES_AFTER and len(outcomes) < MAX_COMMANDS:
                        after += migrated.is_set()
                        wave = [submit(client) for _ in range(WAVE)]
                        outcomes.extend(client.send_all_and_wait(wave, raise_on_timeout=False))

                sender = threading.Thread(target=send_waves)
                sender.start()
                # When this release's migrate runs while they work
                output = governance(PROJECT_ROOT, url, vhost, "migrate")
                migrated.set()
                sender.join(150)
            # Then the schema is this release's, every command was answered and applied,
            # and none was parked
            assert f"schema at revision {schema_head()}" in output
            assert not sender.is_alive()
            assert len(outcomes) > WAVE * WAVES_AFTER
            assert all(o is not None and o["event_type"] == "transition.applied" for o in outcomes)
            assert dead_letters(vhost) == 0
        finally:
            worker.stop()
        log = (tmp_path / "worker.log").read_text()
        assert "Traceback" not in log, log[-3000:]
