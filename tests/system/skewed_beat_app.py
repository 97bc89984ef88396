"""A test-only Celery app: the real worker app, its clock ``GOVERNANCE_TEST_CLOCK_SKEW``
seconds behind the machine's.

Run as ``celery -A tests.system.skewed_beat_app beat``: a beat on a host whose clock runs
behind the workers'. Celery reads the time through ``app.now`` wherever it schedules a run
or dates what it sends, so shifting it shifts every time this beat writes into a message.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from worker.app import app

__all__ = ["app"]

_SKEW = timedelta(seconds=float(os.environ.get("GOVERNANCE_TEST_CLOCK_SKEW", "0")))
_real_now = app.now


def _behind() -> datetime:
    return _real_now() - _SKEW


app.now = _behind  # type: ignore[method-assign]
