"""What ``pip install`` of the project puts into site-packages: the service's packages and
nothing else (the benchmark and the tests run from a checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = {"governance", "governance_cli", "producer", "worker"}


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
