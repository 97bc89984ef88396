"""Baseline 3, the broker ceiling: a Celery task that does nothing.

Same broker, serializer, ``acks_late`` and prefetch as the governance worker; the task's only
act is the completion datagram to the harness (``BENCH_SIGNAL_ADDR``), a few microseconds.
Run as ``celery -A bench.noop_app worker`` with ``GOVERNANCE_BROKER_URL`` set.
"""

from __future__ import annotations

import os
from typing import Any

from bench.baseline_app import baseline_app
from bench.client import NOOP_QUEUE, signal_done

NOOP_TASK = "bench.noop"

app = baseline_app("bench-noop", NOOP_QUEUE)


@app.task(name=NOOP_TASK, acks_late=True, ignore_result=True)
def noop(command: dict[str, Any]) -> None:
    """Nothing; only say it ran."""
    signal_done(os.environ.get("BENCH_SIGNAL_ADDR"), command["command_id"])
