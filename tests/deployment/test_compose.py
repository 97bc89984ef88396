"""The real deployment's files: docker-compose.yml and the Dockerfile say what the README says."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


def test_docker_compose_config_accepts_the_file() -> None:
    # Given the compose CLI (it needs no engine to check a file)
    if not _compose_available():
        if os.environ.get("CI") and shutil.which("docker-compose"):
            pytest.fail("docker-compose is installed but `docker compose` is not usable")
        pytest.skip("`docker compose` is not installed here")
    # When it renders the file
    done = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    # Then it accepts it
    assert done.returncode == 0, done.stderr


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


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    # --scale worker=N needs a service without a fixed container name or host port.
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_no_secret_is_baked_in(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    # Passwords are substitutions from the environment, with development defaults only.
    assert "${GOVERNANCE_DB_PASSWORD:-" in text
    assert "${GOVERNANCE_MQ_PASSWORD:-" in text
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PASSWORD" not in dockerfile


def test_services_reach_each_other_by_service_name(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert "@postgres:5432/" in env["GOVERNANCE_DATABASE_URL"]
    assert "@rabbitmq:5672/" in env["GOVERNANCE_BROKER_URL"]
