"""The highly available deployment, docker-compose.ha.yml: a file compose accepts, and the
shape the failover tests run by hand (a three-node RabbitMQ cluster, a PostgreSQL primary with
a synchronous standby, workers given every node of both)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.system.private_postgres_pair import NODE_NAMES
from worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.ha.yml"
ENV_EXAMPLE = ROOT / ".env.ha.example"
RABBIT_NODES = ("rabbit1", "rabbit2", "rabbit3")
#: The variables the file takes its secrets from; none may have a default.
SECRETS = (
    "GOVERNANCE_DB_PASSWORD",
    "GOVERNANCE_DB_WORKER_PASSWORD",
    "GOVERNANCE_MQ_PASSWORD",
    "GOVERNANCE_REPLICATION_PASSWORD",
    "GOVERNANCE_RABBITMQ_COOKIE",
    "GOVERNANCE_MQ_WORKER_PASSWORD",
    "GOVERNANCE_MQ_PRODUCER_PASSWORD",
    "GOVERNANCE_MQ_SUBSCRIBER_PASSWORD",
    "GOVERNANCE_MQ_OPERATOR_PASSWORD",
)
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


def example_values() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def substituted(value: Any, values: dict[str, str]) -> Any:
    """``value`` with every ``${VAR...}`` replaced as compose would, from ``values``."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda match: values[match.group(1)], value)
    if isinstance(value, list):
        return [substituted(item, values) for item in value]
    if isinstance(value, dict):
        return {key: substituted(item, values) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as compose reads it with the example values (anchors merged)."""
    return dict(substituted(yaml.safe_load(COMPOSE_FILE.read_text()), example_values()))


def compose_command() -> list[str] | None:
    """The compose CLI here (it needs no engine to check a file): v1 or the plugin."""
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def run_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("docker-compose is not installed here")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GOVERNANCE_")}
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=environ,
        timeout=120,
    )


def postgres_settings(service: dict[str, Any]) -> dict[str, str]:
    """The ``-c name=value`` settings a PostgreSQL service's command starts the server with."""
    words = service["command"]
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-c")


def test_compose_accepts_the_file_with_the_example_values() -> None:
    done = run_config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr


def test_compose_refuses_the_file_until_every_secret_is_set(tmp_path: Path) -> None:
    # Given an env file with every value but the secrets
    unset = tmp_path / "no-secrets.env"
    unset.write_text("".join(f"{k}={v}\n" for k, v in example_values().items() if k not in SECRETS))
    # When compose renders the file
    done = run_config(unset)
    # Then it refuses, naming a secret that is missing
    assert done.returncode != 0
    assert any(name in done.stderr for name in SECRETS), done.stderr


def test_the_file_holds_no_secret_and_no_project_name() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    # (compose v1 knows no top-level name: the project name is the env file's)
    assert "name" not in raw
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        assert example_values()[name] not in text
        assert re.search(rf"\$\{{{name}:-", text) is None, f"{name} has a default"


def test_every_published_port_listens_on_loopback_only(compose: dict[str, Any]) -> None:
    published = [
        (name, port) for name, s in compose["services"].items() for port in s.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def test_three_rabbitmq_nodes_form_one_cluster_from_a_shared_peer_list(
    compose: dict[str, Any],
) -> None:
    config = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in config
    cookies = set()
    for node in RABBIT_NODES:
        service = compose["services"][node]
        assert service["hostname"] == node
        assert f"= rabbit@{node}" in config
        assert any(
            v.startswith("./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/")
            for v in service["volumes"]
        )
        cookies.add(service["environment"]["GOVERNANCE_RABBITMQ_COOKIE"])
    # ...all with the one cookie, from the environment
    assert cookies == {example_values()["GOVERNANCE_RABBITMQ_COOKIE"]}


def test_each_postgresql_node_names_the_other_as_its_synchronous_standby(
    compose: dict[str, Any],
) -> None:
    # The names are those of the failover tests' own pair
    first, second = (compose["services"][name] for name in NODE_NAMES)
    for service, own, other in ((first, NODE_NAMES[0], NODE_NAMES[1]), (second, *NODE_NAMES[::-1])):
        settings = postgres_settings(service)
        assert settings["cluster_name"] == own
        assert settings["synchronous_standby_names"] == other
        assert settings["synchronous_commit"] == "on"
        assert settings["wal_level"] == "replica"
        assert service["image"].startswith("postgres:")


def test_the_standby_is_cloned_from_the_primary_under_its_own_name(
    compose: dict[str, Any],
) -> None:
    primary, standby = (compose["services"][name] for name in NODE_NAMES)
    assert standby["environment"]["GOVERNANCE_PRIMARY_HOST"] == NODE_NAMES[0]
    assert standby["environment"]["GOVERNANCE_STANDBY_NAME"] == NODE_NAMES[1]
    assert primary["environment"]["GOVERNANCE_STANDBY_NAME"] == NODE_NAMES[1]
    assert standby["depends_on"][NODE_NAMES[0]]["condition"] == "service_healthy"
    script = (ROOT / "deploy" / "postgres" / "standby-entrypoint.sh").read_text()
    assert "pg_basebackup" in script and "--write-recovery-conf" in script
    assert "application_name=$GOVERNANCE_STANDBY_NAME" in script
    init = (ROOT / "deploy" / "postgres" / "init-primary.sh").read_text()
    assert "REPLICATION" in init and "pg_create_physical_replication_slot" in init
    assert any("/docker-entrypoint-initdb.d/" in volume for volume in primary["volumes"])
    for path in ("deploy/postgres/standby-entrypoint.sh", "deploy/postgres/init-primary.sh"):
        assert os.access(ROOT / path, os.X_OK), f"{path} is not executable"


def test_the_migration_waits_for_the_standby_without_which_no_commit_is_acknowledged(
    compose: dict[str, Any],
) -> None:
    depends = compose["services"]["migrate"]["depends_on"]
    assert {name: depends[name]["condition"] for name in NODE_NAMES} == {
        name: "service_healthy" for name in NODE_NAMES
    }


@pytest.mark.parametrize("name", ["migrate", "worker", "beat", "cli"])
def test_every_process_is_given_every_node_of_both_services(
    compose: dict[str, Any], name: str
) -> None:
    environment = compose["services"][name]["environment"]
    # The worker's own parser accepts both URLs
    settings = Settings.from_env(environment)
    brokers = settings.broker_url.split(";")
    assert [b.split("@", 1)[1] for b in brokers] == [f"{node}:5672//" for node in RABBIT_NODES]
    hosts = settings.database_url.split("@", 1)[1].split("/", 1)[0]
    assert hosts == ",".join(f"{node}:5432" for node in NODE_NAMES)
    assert settings.database_url.endswith("?target_session_attrs=read-write")


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_workers_and_beat_connect_as_the_worker_login_never_the_owner(
    compose: dict[str, Any], name: str
) -> None:
    owner = compose["services"]["postgres1"]["environment"]["POSTGRES_USER"]
    login = compose["services"]["worker-login"]["environment"]
    service = compose["services"][name]

    url = Settings.from_env(service["environment"]).database_url
    user, password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)
    assert user != owner
    assert user == login["GOVERNANCE_DB_WORKER_USER"]
    assert password == example_values()["GOVERNANCE_DB_WORKER_PASSWORD"]
    assert service["depends_on"]["worker-login"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["migrate", "worker-key", "cli"])
def test_what_an_operator_does_connects_as_the_owner(compose: dict[str, Any], name: str) -> None:
    owner = compose["services"]["postgres1"]["environment"]["POSTGRES_USER"]
    url = compose["services"][name]["environment"]["GOVERNANCE_DATABASE_URL"]
    assert url.split("://", 1)[1].split(":", 1)[0] == owner


def test_the_worker_login_is_made_on_the_primary_after_the_migration(
    compose: dict[str, Any],
) -> None:
    login = compose["services"]["worker-login"]
    postgres = compose["services"]["postgres1"]["environment"]

    assert login["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert login["environment"]["PGHOST"] == ",".join(NODE_NAMES)
    assert login["environment"]["PGTARGETSESSIONATTRS"] == "read-write"
    assert login["environment"]["PGUSER"] == postgres["POSTGRES_USER"]
    script, mounted = login["volumes"][0].split(":")[:2]
    assert (ROOT / script).is_file()
    assert login["command"] == ["sh", mounted]


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_worker_and_beat_start_after_the_migration_and_the_whole_cluster(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["command"][:4] == ["celery", "-A", "worker", name]
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for node in RABBIT_NODES:
        assert service["depends_on"][node]["condition"] == "service_healthy"


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("worker", "governance-worker"),
        ("beat", "governance-worker"),
        ("cli", "governance-operator"),
    ],
)
def test_each_service_connects_to_every_broker_node_as_its_own_user(
    compose: dict[str, Any], name: str, user: str
) -> None:
    service = compose["services"][name]
    brokers = service["environment"]["GOVERNANCE_BROKER_URL"].split(";")
    assert [b.split("://", 1)[1].split(":", 1)[0] for b in brokers] == [user] * len(RABBIT_NODES)
    assert service["depends_on"]["broker-users"]["condition"] == "service_completed_successfully"


def test_the_broker_users_are_made_once_for_the_whole_cluster(compose: dict[str, Any]) -> None:
    users = compose["services"]["broker-users"]
    script = users["command"][-1]
    assert f"./deploy/rabbitmq/users.sh:{script}:ro" in users["volumes"]
    # Users are the cluster's: one node is told, once all three are up
    assert users["environment"]["GOVERNANCE_RABBITMQCTL"] == "rabbitmqctl -n rabbit@rabbit1"
    for node in RABBIT_NODES:
        assert users["depends_on"][node]["condition"] == "service_healthy"
    cookie = compose["services"]["rabbit1"]["environment"]["GOVERNANCE_RABBITMQ_COOKIE"]
    assert users["environment"]["GOVERNANCE_RABBITMQ_COOKIE"] == cookie
    assert (
        users["environment"]["GOVERNANCE_MQ_WORKER_PASSWORD"]
        == (example_values()["GOVERNANCE_MQ_WORKER_PASSWORD"])
    )
