"""The bench's own corner of the shared services, and the processes it starts.

A fresh database (migrated, dropped after), a private RabbitMQ vhost (deleted after), worker
processes it starts and stops itself, and CPU accounting of every process kind.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import psutil
import psycopg

from governance.policy_document import parse_policy
from worker import policy_store
from worker.migrate import migrate

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the server, migrated to the newest schema; dropped afterwards."""
    name = f"governance_bench_{os.getpid()}_{os.urandom(3).hex()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_path(server_url, f"/{name}")
    try:
        migrate(url)
        apply_policy(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: What the bench's requests need from the deployment: nothing beyond what their requesters
#: ask for (the approval phases name their own approvers), decided in the default mode.
OPEN_POLICY = """\
policy: 1
rules:
  - id: open
    require: []
"""


def apply_policy(database_url: str, text: str = OPEN_POLICY) -> None:
    """Apply ``text`` as the database's approval policy, as ``governance policy apply
    --force`` does (the bench's large policy names groups nobody is in)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        policy_store.apply_policy(conn, parse_policy(text), force=True)


def _rabbitmqctl(*args: str) -> bool:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def private_vhost(broker_url: str) -> Iterator[tuple[str, bool]]:
    """A vhost of this run on the broker (so concurrent test runs never consume the bench's
    messages), deleted afterwards; the given URL unchanged where ``rabbitmqctl`` is missing.
    Yields the URL and whether it is private."""
    if shutil.which("rabbitmqctl") is None:
        yield broker_url, False
        return
    name = f"governance-bench-{os.getpid()}-{os.urandom(3).hex()}"
    user = urlsplit(broker_url).username or "guest"
    if not (
        _rabbitmqctl("add_vhost", name)
        and _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    ):
        _rabbitmqctl("delete_vhost", name)
        yield broker_url, False
        return
    try:
        yield with_path(broker_url, f"/{name}"), True
    finally:
        _rabbitmqctl("delete_vhost", name)


#: Tables a phase leaves behind it; the registry (actors, keys and their audit) stays, as it
#: would in a deployment.
KEPT_TABLES = (
    "alembic_version",
    "actors",
    "actor_keys",
    "registry_audit",
    "policy_versions",
    "deployment_settings",
)


def reset_database(database_url: str) -> None:
    """Empty every table of the schema but the migration record and the registry, between
    phases."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname = 'public' AND NOT tablename = ANY(%s)",
                (list(KEPT_TABLES),),
            )
        ]
        if tables:
            # The history's append-only triggers refuse TRUNCATE, as they should anywhere but
            # in a bench's own database between phases.
            with conn.transaction():
                for table in tables:
                    conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
                for table in tables:
                    conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        conn.execute("VACUUM ANALYZE")


class WorkerDied(RuntimeError):
    """A worker process the bench started exited while a phase was running."""


class WorkerProcess:
    """One ``python -m celery -A APP worker --concurrency C`` process (main + pool children)."""

    def __init__(
        self,
        app: str,
        env: dict[str, str],
        *,
        concurrency: int,
        name: str,
        log_dir: Path,
        queues: str | None = None,
    ) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            # Celery's default level (WARNING): no log line per task, as in production.
            "--loglevel",
            "WARNING",
            "-n",
            f"{name}@%h",
        ]
        if queues:
            args += ["-Q", queues]
        self.process = subprocess.Popen(
            args,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def pids(self) -> list[int]:
        """The main process and all its descendants (the pool's children)."""
        try:
            main = psutil.Process(self.pid)
            return [self.pid, *(child.pid for child in main.children(recursive=True))]
        except psutil.Error:
            return []

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def wait_or_kill(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


@dataclass
class WorkerSet:
    """The worker processes of one configuration, started together and awaited ready."""

    app: str
    count: int
    layout: str
    processes: list[WorkerProcess] = field(default_factory=list)

    @property
    def description(self) -> dict[str, Any]:
        if self.layout == "processes":
            shape = f"{self.count} x `celery worker --concurrency 1` (each: main + 1 pool child)"
        else:
            shape = f"1 x `celery worker --concurrency {self.count}` (main + {self.count} children)"
        return {"app": self.app, "worker_processes": self.count, "layout": shape}

    def pids(self) -> list[int]:
        return [pid for process in self.processes for pid in process.pids()]

    def check(self) -> None:
        """Raise :class:`WorkerDied` if any process of the set has exited."""
        for process in self.processes:
            code = process.process.poll()
            if code is not None:
                raise WorkerDied(
                    f"{self.app} worker process {process.pid} exited with {code} "
                    f"(a negative code is the signal that ended it):\n{process.log_tail()}"
                )

    def stop(self, cold: bool = False) -> None:
        """Stop every process at once: warm shutdown (SIGTERM) by default; cold (SIGQUIT) when
        the caller knows nothing is in flight, which skips Celery's seconds-long warm wait."""
        for process in self.processes:
            process.signal(signal.SIGQUIT if cold else signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.wait_or_kill(20.0)
        self.processes.clear()


def start_workers(
    app: str,
    count: int,
    env: dict[str, str],
    *,
    broker_url: str,
    queue: str,
    layout: str = "processes",
    log_dir: Path,
    timeout: float = 60.0,
) -> WorkerSet:
    """Start ``count`` worker processes of ``app`` and wait until each consumes ``queue``.

    The database's recorded trust mode is set to the workers' ``GOVERNANCE_AUTH`` first, as an
    operator would (``governance migrate --auth``): a worker refuses to start in another one,
    and the bench compares both."""
    if "GOVERNANCE_DATABASE_URL" in env:
        migrate(env["GOVERNANCE_DATABASE_URL"], auth=env.get("GOVERNANCE_AUTH", "signed"))
    workers = WorkerSet(app, count, layout)
    tag = f"{app.replace('.', '_')}-{os.getpid()}-{os.urandom(2).hex()}"
    try:
        if layout == "processes":
            for index in range(count):
                workers.processes.append(
                    WorkerProcess(app, env, concurrency=1, name=f"{tag}-{index}", log_dir=log_dir)
                )
        else:
            workers.processes.append(
                WorkerProcess(app, env, concurrency=count, name=f"{tag}-0", log_dir=log_dir)
            )
        deadline = time.monotonic() + timeout
        while consumer_count(broker_url, queue) < len(workers.processes):
            for process in workers.processes:
                process.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"workers not consuming in {timeout}s:\n{workers.processes[0].log_tail()}"
                )
            time.sleep(0.1)
    except BaseException:
        workers.stop()
        raise
    return workers


def consumer_count(broker_url: str, queue: str) -> int:
    """How many consumers ``queue`` has (0 while it does not exist yet)."""
    with kombu.Connection(broker_url) as conn:
        try:
            declared = conn.default_channel.queue_declare(queue=queue, passive=True)
        except Exception:  # not declared yet: no consumer either
            return 0
        return int(declared.consumer_count)


def queues_drained(vhost: str, queues: tuple[str, ...], timeout: float = 15.0) -> bool:
    """Wait until none of ``queues`` holds a message, delivered-but-unacknowledged included
    (which AMQP itself cannot tell); False when ``rabbitmqctl`` cannot say."""
    if shutil.which("rabbitmqctl") is None:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "messages"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            return False
        counts = dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
        if all(counts.get(name, "0").strip() == "0" for name in queues):
            return True
        time.sleep(0.2)
    return False


def worker_log_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="governance-bench-")


# ---------------------------------------------------------------------------------------------
# CPU accounting


def _cpu_of(pids: list[int]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        seconds[pid] = times.user + times.system
    return seconds


def database_backend_pids(database_url: str) -> list[int]:
    """The server processes serving the bench database (readable when the server is local)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [
            int(row[0])
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        ]


def rabbitmq_pids() -> list[int]:
    return [
        process.pid
        for process in psutil.process_iter(["name"])
        if (process.info.get("name") or "").startswith("beam")
    ]


@dataclass
class CpuMeter:
    """CPU seconds each process kind spent between ``start()`` and ``stop()``.

    Process lists are taken again at the end, so a database backend opened during the phase
    is counted from zero (its whole life lies inside the phase).
    """

    database_url: str
    workers: WorkerSet | None
    #: Further processes measured as a kind of their own (the delay proxies).
    others: dict[str, list[int]] = field(default_factory=dict)
    _before: dict[str, dict[int, float]] = field(default_factory=dict)
    _machine_before: Any = None
    _wall_before: float = 0.0
    _harness_before: float = 0.0

    def _kinds(self) -> dict[str, list[int]]:
        kinds = {"rabbitmq_beam": rabbitmq_pids()}
        with contextlib.suppress(psycopg.Error):
            kinds["postgres_backends"] = database_backend_pids(self.database_url)
        if self.workers is not None:
            kinds["worker_processes"] = self.workers.pids()
        kinds.update(self.others)
        return kinds

    def start(self) -> None:
        self._before = {kind: _cpu_of(pids) for kind, pids in self._kinds().items()}
        self._machine_before = psutil.cpu_times()
        self._harness_before = _harness_cpu()
        self._wall_before = time.monotonic()

    def stop(self, extra_harness_seconds: float = 0.0) -> dict[str, Any]:
        wall = time.monotonic() - self._wall_before
        result: dict[str, Any] = {}
        for kind, pids in self._kinds().items():
            now = _cpu_of(pids)
            before = self._before.get(kind, {})
            result[kind] = round(sum(now[p] - before.get(p, 0.0) for p in now), 3)
        result["harness"] = round(_harness_cpu() - self._harness_before + extra_harness_seconds, 3)
        machine = psutil.cpu_times()
        busy = sum(
            getattr(machine, name) - getattr(self._machine_before, name)
            for name in ("user", "system", "nice", "irq", "softirq", "steal")
            if hasattr(machine, name)
        )
        result["machine_busy"] = round(busy, 3)
        # CPU the machine spent on anything not listed: other work sharing the machine (and
        # PostgreSQL's background writers), i.e. how noisy this phase's figures are.
        ours = sum(v for k, v in result.items() if k != "machine_busy")
        result["unaccounted"] = round(busy - ours, 3)
        result["wall_seconds"] = round(wall, 3)
        result["machine_capacity"] = round(wall * (os.cpu_count() or 1), 3)
        return result


def _harness_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


# ---------------------------------------------------------------------------------------------
# What ran where


def machine_info(database_url: str, broker_url: str) -> dict[str, Any]:
    """CPU count, versions of Python, PostgreSQL and RabbitMQ, and the git commit measured."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with contextlib.suppress(Exception), psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        info["postgres"] = row[0] if row else None
    with contextlib.suppress(Exception), kombu.Connection(broker_url) as conn:
        conn.connect()
        properties = conn.connection.server_properties
        info["rabbitmq"] = _text(properties.get("version"))
    with contextlib.suppress(Exception):
        import celery
        import kombu as kombu_module

        info["celery"] = celery.__version__
        info["kombu"] = kombu_module.__version__
        info["psycopg"] = psycopg.__version__
    info["git"] = _git()
    return info


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _git() -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def grow_outbox(rows: int, unpublished_every: int | None) -> Callable[[str], dict[str, Any]]:
    """A database preparation: an outbox of ``rows`` published events of other requests,
    analysed; then, with ``unpublished_every``, one event in that many left unpublished (what
    a broker outage leaves behind), unseen by the statistics (autovacuum is off for the
    table, as it would not yet have noticed a change of a few percent)."""

    def prepare(database_url: str) -> dict[str, Any]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE outbox_events SET (autovacuum_enabled = false)")
            conn.execute(
                "INSERT INTO outbox_events (event_id, event_type, command_id, request_id, "
                "routing_key, body, published_at) "
                "SELECT gen_random_uuid(), 'transition.applied', 'grown-' || g, "
                "'grown-' || (g %% 100000), 'transition.applied.approve', '{}'::jsonb, now() "
                "FROM generate_series(1, %s) AS g",
                (rows,),
            )
            conn.execute("ANALYZE outbox_events")
            backlog = 0
            if unpublished_every:
                backlog = (
                    conn.execute(
                        "UPDATE outbox_events SET published_at = NULL "
                        "WHERE command_id LIKE 'grown-%%' AND sequence %% %s = 0",
                        (unpublished_every,),
                    ).rowcount
                    or 0
                )
        return {"outbox_rows_of_other_requests": rows, "unpublished_of_other_requests": backlog}

    return prepare


def grow_history(requests: int, events: int) -> Callable[[str], dict[str, Any]]:
    """A database preparation: ``requests`` requests of other producers, finished or pending,
    and ``events`` published outbox events with a ledger row each, as a service that has run
    for a long while before retention leaves them; analysed, as autovacuum would have."""

    def prepare(database_url: str) -> dict[str, Any]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            # Planted rows have no histories: the guard that wants decisions for every
            # request row is the owner's to switch off, as a restore would.
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "INSERT INTO mutation_requests (request_id, state_id, state_type, mutation_type, "
                "intent, context, status, pending_reason, approval_requirements, revision, "
                "expires_at, created_at, updated_at, metadata) "
                "SELECT 'grown-' || g, 'state-' || (g %% 50000), 'config', 'update', "
                '\'{"operation_name": "grown"}\'::jsonb, '
                '\'{"actor": {"id": "grown", "type": "service"}}\'::jsonb, '
                "CASE WHEN g %% 10 = 0 THEN 'pending' ELSE 'executed' END, "
                "CASE WHEN g %% 10 = 0 THEN 'approval' END, '[]'::jsonb, 3, "
                "CASE WHEN g %% 20 = 0 THEN now() + interval '30 days' END, now(), now(), "
                "'{}'::jsonb FROM generate_series(1, %s) AS g",
                (requests,),
            )
            conn.execute(
                "INSERT INTO outbox_events (event_id, event_type, command_id, request_id, "
                "routing_key, body, published_at) "
                "SELECT gen_random_uuid(), 'transition.applied', 'grown-' || g, "
                "'grown-' || (g %% %s + 1), 'transition.applied.approve', '{}'::jsonb, now() "
                "FROM generate_series(1, %s) AS g",
                (max(requests, 1), events),
            )
            conn.execute(
                "INSERT INTO processed_commands (namespace, command_id, payload_hash, "
                "event_sequence, request_id, outcome) "
                "SELECT 'grown', command_id, md5(command_id), sequence, request_id, event_type "
                "FROM outbox_events WHERE command_id LIKE 'grown-%%'"
            )
            for table in ("mutation_requests", "outbox_events", "processed_commands"):
                conn.execute(f"VACUUM ANALYZE {table}")
        return {"requests_of_others": requests, "outbox_rows_of_others": events}

    return prepare
