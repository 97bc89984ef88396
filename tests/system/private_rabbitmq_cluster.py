"""A RabbitMQ cluster of this test run alone: three nodes from the installed binaries, joined
into one cluster, each with its own name, ports, data, logs, configuration and home (one
shared Erlang cookie), that a test may kill, stop and start at will.

Where the binaries are missing or the nodes cannot start, the test is skipped with the reason
(it fails when ``GOVERNANCE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import reserve_port
from tests.support.services import broker_answers, unavailable

#: Where distribution packages keep the real scripts (``/usr/sbin`` holds wrappers that
#: switch to the ``rabbitmq`` user and reset its home, which would share one cookie with the
#: system's own node).
PACKAGED_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def _scripts() -> Path | None:
    if (PACKAGED_SCRIPTS / "rabbitmq-server").exists():
        return PACKAGED_SCRIPTS
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


def _service_account() -> tuple[int, int] | None:
    """The ``rabbitmq`` account to run the nodes as when we are root (the Erlang VM refuses
    nothing as root, but the files it writes should not be root's); None otherwise."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        account = pwd.getpwnam("rabbitmq")
        return account.pw_uid, account.pw_gid
    return None


class ClusterNode:
    """One node of the cluster: its own directories, ports and environment."""

    def __init__(self, base: Path, scripts: Path, cookie: str, label: str) -> None:
        self.base = base
        self.scripts = scripts
        self.label = label
        self.node = f"governance-{label}-{uuid.uuid4().hex[:6]}@localhost"
        self.port = reserve_port()
        home = base / "home"
        for sub in ("mnesia", "log", "home"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            # Small disk and memory thresholds: a test machine is not a broker's host.
            "disk_free_limit.absolute = 50MB\n"
            "vm_memory_high_watermark.relative = 0.8\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        # Built from nothing, not from os.environ: RabbitMQ also reads bare variables (LOGS,
        # NODENAME, CONFIG_FILE, ...) as its own settings, whatever else set them.
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(reserve_port()),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "mnesia" / "feature_flags"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.process: subprocess.Popen[bytes] | None = None
        self.account = _service_account()
        if self.account is not None:
            uid, gid = self.account
            for path in [base, *base.rglob("*")]:
                os.chown(path, uid, gid)

    @property
    def _user(self) -> int | None:
        return None if self.account is None else self.account[0]

    @property
    def _group(self) -> int | None:
        return None if self.account is None else self.account[1]

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node> ARGS...`` with this node's cookie."""
        try:
            return subprocess.run(
                [str(self.scripts / "rabbitmqctl"), "-n", self.node, *args],
                env=self.env,
                cwd=self.base,
                user=self._user,
                group=self._group,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout}s")

    def launch(self) -> None:
        """Start the node's process, without waiting for it."""
        with open(self.base / "server.out", "ab") as out:
            self.process = subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self.env,
                cwd=self.base,
                user=self._user,
                group=self._group,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_answering(self, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while not broker_answers(self.url):
            if self.process is None or self.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        return True

    def start(self) -> None:
        self.launch()
        if not self.wait_answering():
            raise RuntimeError(f"node {self.node} did not start:\n{self.output()}")

    def output(self) -> str:
        path = self.base / "server.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node, its Erlang VM and all (no shutdown of any kind)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def stop(self) -> None:
        """Stop the node cleanly; its data stays, so it rejoins the cluster on start."""
        if self.process is None:
            return
        self.ctl("stop", timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


class PrivateRabbitMQCluster:
    """Three (or ``size``) RabbitMQ nodes joined into one cluster."""

    def __init__(self, base: Path, size: int = 3) -> None:
        scripts = _scripts()
        if scripts is None:
            unavailable("rabbitmq-server is not installed: cannot run a RabbitMQ cluster")
        assert scripts is not None
        # One cookie for all: nodes (and rabbitmqctl) of one cluster must share it.
        cookie = secrets.token_hex(16).upper()
        self.nodes = [
            ClusterNode(base / f"node-{i}", scripts, cookie, f"n{i}") for i in range(size)
        ]

    @property
    def url_list(self) -> str:
        """Every node's URL, ``;``-separated: what a process is given to fail over."""
        return ";".join(node.url for node in self.nodes)

    def node_named(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.node == name)

    def start(self) -> None:
        """Start every node (at once), then join the others to the first."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            if not node.wait_answering():
                raise RuntimeError(f"node {node.node} did not start:\n{node.output()}")
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for step in (("stop_app",), ("join_cluster", first.node), ("start_app",)):
                done = node.ctl(*step)
                if done.returncode != 0:
                    raise RuntimeError(f"{node.node}: rabbitmqctl {' '.join(step)}: {done.stderr}")
        for node in self.nodes[1:]:
            if not node.wait_answering():
                raise RuntimeError(f"node {node.node} did not rejoin:\n{node.output()}")

    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def leader_of(self, queue: str) -> ClusterNode:
        """The node that leads the quorum queue ``queue`` now (asked of a running node)."""
        for node in self.running_nodes():
            done = node.ctl("-q", "list_queues", "name", "leader", "--no-table-headers")
            for line in done.stdout.splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[0] == queue:
                    return self.node_named(fields[1])
        raise LookupError(f"no running node knows a leader of {queue}")

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def private_rabbitmq_cluster(size: int = 3) -> Iterator[PrivateRabbitMQCluster]:
    """A fresh cluster for the block; every node killed and its files removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="governance-cluster-") as base:
        Path(base).chmod(0o755)
        cluster = PrivateRabbitMQCluster(Path(base), size)
        try:
            try:
                cluster.start()
            except (RuntimeError, OSError) as exc:
                unavailable(f"a private RabbitMQ cluster cannot start: {exc}")
            yield cluster
        finally:
            cluster.close()
