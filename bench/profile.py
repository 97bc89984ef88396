"""Where a worker process spends its CPU: py-spy sampling it during a phase.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;... count``
(outermost first). From those the report keeps the functions most often on top of the stack
(self time) and most often anywhere on it (inclusive time), as shares of the samples. Idle
samples (the process waiting in ``poll``/``epoll`` or a socket read) are left out by py-spy
unless asked for, so the shares are of the time the process was running Python or C code.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

#: Samples per second; py-spy's default is 100.
RATE = 250
#: Functions listed per ranking.
TOP = 15


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, or on ``PATH``."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """Samples one process from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int, label: str) -> None:
        self.pid = pid
        self.label = label
        self._out = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "stacks.txt"
        self._process: subprocess.Popen[bytes] | None = None
        self.problem: str | None = None

    def start(self) -> Profiler:
        executable = py_spy()
        if executable is None:
            self.problem = "py-spy is not installed (pip install py-spy)"
            return self
        self._process = subprocess.Popen(
            [
                executable,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(RATE),
                "--format",
                "raw",
                "--output",
                str(self._out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the rankings (or why there are none)."""
        if self._process is None:
            return {"process": self.label, "error": self.problem}
        self._process.send_signal(signal.SIGINT)
        try:
            _, err = self._process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, err = self._process.communicate()
        if not self._out.exists():
            return {"process": self.label, "error": err.decode(errors="replace").strip()[-500:]}
        summary = summarize(self._out.read_text())
        shutil.rmtree(self._out.parent, ignore_errors=True)
        return {"process": self.label, "pid": self.pid, "rate_per_s": RATE, **summary}


#: Leaf functions that are a process waiting in a system call (for a socket, a poll), not
#: using the CPU. py-spy cannot always tell a waiting thread from a running one here, and
#: psycopg's wait is C code called from its generators, so its samples land on their frames.
WAITING = (
    "Connection.wait (psycopg/connection.py)",
    "BasePipeline._communicate_gen (psycopg/_pipeline_base.py)",
    "BasePipeline._fetch_gen (psycopg/_pipeline_base.py)",
    "TCPTransport._read (amqp/transport.py)",
    "_epoll.poll (utils/eventio.py)",
    "_poll (utils/eventio.py)",
    "_PollLikeSelector.select (selectors.py)",
    "Connection._recv (billiard/connection.py)",
)

#: Packages whose modules share a name with the project's (``celery/worker/...``).
LIBRARIES = ("celery", "kombu", "amqp", "billiard", "psycopg", "psycopg_pool", "click", "vine")


def summarize(raw: str, top: int = TOP) -> dict[str, Any]:
    """From py-spy's raw output: the share of samples spent waiting, the functions most
    often running on top of the stack (self), and the project's own functions most often
    anywhere on it (inclusive); every share is of all samples."""
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = _function(frames[-1])
        total += count
        if leaf in WAITING:
            waiting += count
            continue
        own[leaf] += count
        for name in {_function(frame) for frame in frames if _is_project(frame)}:
            ours[name] += count

    def ranking(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / total, 3)}
            for name, count in counter.most_common(top)
        ]

    return {
        "samples": total,
        "waiting_share": round(waiting / total, 3) if total else None,
        "self": ranking(own),
        "project_inclusive": ranking(ours),
    }


def _is_project(frame: str) -> bool:
    """A frame of the project's own code (not a library's, nor the standard library's)."""
    where = frame.partition(" (")[2]
    parts = Path(where.rstrip(")").rsplit(":", 1)[0]).parts
    return (
        len(parts) >= 2
        and parts[-2] in ("worker", "governance", "producer", "observability")
        and not any(part in LIBRARIES or part == "site-packages" for part in parts)
        and not any(part.startswith("python3") for part in parts)
    )


def _function(frame: str) -> str:
    """``name (path/to/module.py:LINE)`` as ``name (module.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    # Keep the package and module (``worker/transaction.py``, ``kombu/message.py``).
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})" if path else name
