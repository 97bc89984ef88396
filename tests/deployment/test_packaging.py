"""What ``pip install`` of the project puts into site-packages: the service's packages and
nothing else (the benchmark and the tests run from a checkout)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = {"governance", "governance_cli", "governance_console", "producer", "worker"}


def test_the_wheel_holds_the_service_packages_only(tmp_path: Path) -> None:
    # Given the project built as pip builds it for an install
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "--wheel-dir", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    # Then its top-level packages are the service's: no `bench`, no `tests`
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/", 1)[0] for name in archive.namelist()}
    packages = {name for name in top_level if not name.endswith(".dist-info")}
    assert packages == SERVICE_PACKAGES


def test_the_project_builds_with_the_locked_backend_and_nothing_fetched(tmp_path: Path) -> None:
    # Given a fresh environment holding only the hash-checked build lock, as the image does
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    lock = ROOT / "build-requirements.lock"
    subprocess.run(
        [*pip, "install", "--require-hashes", "--no-deps", "-r", str(lock)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # When the project is built as the Dockerfile builds it, with no index to fetch from
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    built = subprocess.run(
        [*pip, "wheel", *offline, "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then it builds
    assert built.returncode == 0, built.stderr[-3000:]
    assert list((tmp_path / "dist").glob("governance_worker-*.whl"))


def test_the_image_runs_the_python_the_lock_is_compiled_for() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    lock_header = (ROOT / "requirements.lock").read_text().splitlines()[1]

    (image_python,) = re.findall(r"^FROM python:(\d+\.\d+)-", dockerfile, re.MULTILINE)
    (lock_python,) = re.findall(r"--python-version (\d+\.\d+)", lock_header)
    assert image_python == lock_python


def test_the_image_copies_every_package_the_wheel_holds() -> None:
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))

    assert copied == SERVICE_PACKAGES
