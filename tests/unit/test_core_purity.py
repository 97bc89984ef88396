"""The core package stays pure: importing all of it loads no infrastructure."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "worker",
    "producer",
    "governance_cli",
    "sqlalchemy",
    "celery",
    "kombu",
    "psycopg",
)
# ``cryptography`` is allowed: checking a signature is a computation, and the core's
# authentication must be re-run by verify exactly as the worker ran it.


def test_importing_the_core_loads_no_infrastructure() -> None:
    # Given a fresh interpreter
    script = (
        "import json, pkgutil, importlib, sys, governance\n"
        "for m in pkgutil.walk_packages(governance.__path__, 'governance.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # When every module of the core is imported
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = json.loads(done.stdout)
    # Then nothing of the worker, the producer or any I/O library came with it
    offenders = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert offenders == []
