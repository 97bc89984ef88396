"""Real worker processes for system tests: ``celery -A worker worker`` as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.environment import child_environment

PROJECT_ROOT = Path(__file__).resolve().parents[2]


#: The settings every process a test starts runs with unless the test names another value:
#: the service's defaults, spelled out so that nothing a shell exports can change them.
PINNED_SETTINGS = {
    "GOVERNANCE_AUTH": "signed",
    "GOVERNANCE_LOG_FORMAT": "text",
}


def service_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a service process on these URLs: no ``GOVERNANCE_*`` variable of
    the shell, the pinned defaults, the tests' worker key (every worker signs its events;
    it is registered in every tracked database), then the test's own settings
    (``extra``)."""
    from tests.support.identities import worker_key_file

    return child_environment(
        {
            **PINNED_SETTINGS,
            "GOVERNANCE_WORKER_KEY": str(worker_key_file()),
            "GOVERNANCE_DATABASE_URL": database_url,
            "GOVERNANCE_BROKER_URL": broker_url,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )


def run_governance(
    database_url: str, broker_url: str, *args: str, actor: str = "cli-user"
) -> subprocess.CompletedProcess[str]:
    """Run ``governance ARGS...`` to completion on these services, signing as the actor the
    arguments name (``--actor``, else ``actor``)."""
    from tests.support.identities import signing_env

    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=PROJECT_ROOT,
        env=service_env(
            database_url, broker_url, GOVERNANCE_ACTOR=actor, **signing_env(args, actor)
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


class WorkerProcess:
    """One ``celery -A worker worker`` process (a main process and its pool children).

    It connects as a member of the database's worker role, as a deployment's workers do
    (:func:`tests.support.database_logins.worker_login_url`): a privilege the worker lacks
    fails the test. ``as_owner`` connects as ``database_url`` says instead.
    """

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        *,
        concurrency: int = 2,
        app: str = "worker",
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        as_owner: bool = False,
        release: Path = PROJECT_ROOT,
    ) -> None:
        """``release`` is the checkout whose code the worker runs (another release's
        worktree, for a rolling upgrade); this one by default."""
        from tests.support.database_logins import worker_login_url

        self.database_url = database_url if as_owner else worker_login_url(database_url)
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *extra_args,
            ],
            cwd=release,
            env=service_env(
                self.database_url,
                broker_url,
                **({"PYTHONPATH": str(release)} if release != PROJECT_ROOT else {}),
                **(extra_env or {}),
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the worker logs that it is consuming (needs ``log_path``)."""
        assert self.log_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def child_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown; kill the process group if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class BeatProcess:
    """One ``celery -A APP beat`` process (the scheduler of the maintenance runs), its schedule
    file under ``directory``."""

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        directory: Path,
        *,
        app: str = "worker",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = directory / "beat.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(directory / "beat-schedule"),
            ],
            cwd=PROJECT_ROOT,
            env=service_env(database_url, broker_url, **(extra_env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop it; kill its process group if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


#: pytest-timeout's bound for a test that starts services and workers of its own: a guard
#: against a hang, well above the sum of the test's own bounded waits, so that on a loaded
#: machine a test fails on the wait that did not end, with its message, never on this.
HANG_GUARD = 900
