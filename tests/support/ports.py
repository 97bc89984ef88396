"""Ports for the servers a test starts, that nothing else on the machine will take.

Asking the kernel for port 0 hands out a port of the ephemeral range, the range every
outgoing connection takes its local port from: when a test stops its private RabbitMQ to
restart it, any client of any other test may be given that port in the meantime, and the
restart fails with ``eaddrinuse``. So ports come from below the ephemeral range, where the
kernel never assigns one by itself, and each is claimed by a file that the test processes of
one run (xdist workers included) share, so that two tests never pick the same one.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
from pathlib import Path

LOWEST = 20000
FALLBACK_EPHEMERAL_START = 32768


def _ephemeral_start() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_EPHEMERAL_START


def _claims() -> Path:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    directory = Path(tempfile.gettempdir()) / f"governance-test-ports-{run}"
    directory.mkdir(exist_ok=True)
    return directory


def _claim(port: int) -> bool:
    try:
        fd = os.open(_claims() / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _unbound(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on, that the kernel will not give to an
    outgoing connection, and that no other test of this run has been given."""
    top = _ephemeral_start()
    if top - LOWEST < 1000:
        raise RuntimeError(f"no room below the ephemeral port range (it starts at {top})")
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(LOWEST, top)
        if _unbound(port) and _claim(port):
            return port
    raise RuntimeError(f"no free port between {LOWEST} and {top} after 500 tries")
