"""A test-only Celery app: the real worker app, with faults at named points.

Run as ``celery -A tests.system.faults_app worker``. It imports the production app unchanged
and wraps, in this process only, the functions a command passes through, so a test can make
a worker die (or freeze) exactly where the design says it may:

- ``holding_lock``: in the guarded transaction, after ``SELECT ... FOR UPDATE`` returned,
  before the decision: the child SIGKILLs itself while it holds the row lock;
- ``pause_holding_lock``: the same point, but the child SIGSTOPs itself (and writes its pid
  to ``paused.<command_id>`` first, so the test knows whom to SIGCONT);
- ``after_commit``: after the transaction committed and its event was published, before
  Celery acknowledges the message: the child SIGKILLs itself;
- ``before_publish``: after the commit, before the event is published: the whole worker
  (main process and children) is SIGKILLed, so only the relay can publish the event;
- ``expire_midbatch``: inside an expiry sweep, once the process has decided
  ``GOVERNANCE_TEST_EXPIRE_KILL_AFTER`` expirations: the child SIGKILLs itself in the middle
  of the sweep's transaction, with the batch's rows locked.

A point is armed for one command by creating the file ``<point>.<command_id>`` (for
``expire_midbatch``: ``expire_midbatch.any``) in ``GOVERNANCE_TEST_FAULT_DIR``; the hook
removes it before it fires, so the redelivery goes through unharmed.

Commands whose ``command_id`` starts with ``poison-`` make the handler raise every time.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from worker import runtime, transaction
from worker.app import app

__all__ = ["app"]

_FAULT_DIR = os.environ.get("GOVERNANCE_TEST_FAULT_DIR")
_EXPIRE_KILL_AFTER = int(os.environ.get("GOVERNANCE_TEST_EXPIRE_KILL_AFTER", "20"))
POISON_PREFIX = "poison-"


def _take(point: str, name: str) -> bool:
    """Whether ``point`` is armed for ``name``; disarms it (one firing only)."""
    if not _FAULT_DIR:
        return False
    try:
        os.unlink(Path(_FAULT_DIR) / f"{point}.{name}")
    except FileNotFoundError:
        return False
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


_real_decide = transaction.decide


class _Expiries:
    decided = 0


def _decide(current: Any, command: Any, now: Any) -> Any:
    # Called with the row locked: the transaction is open and holds FOR UPDATE.
    if command.type.value == "expire" and command.actor.id == "system":
        _Expiries.decided += 1
        if _Expiries.decided >= _EXPIRE_KILL_AFTER and _take("expire_midbatch", "any"):
            _die()
    if _take("holding_lock", command.command_id):
        _die()
    if _take("pause_holding_lock", command.command_id):
        assert _FAULT_DIR is not None
        marker = Path(_FAULT_DIR) / f"paused.{command.command_id}"
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)
    return _real_decide(current, command, now)


_real_apply = runtime.apply_command


def _apply_then_maybe_die(conn: Any, payload: object) -> Any:
    stored = _real_apply(conn, payload)
    # Committed; nothing published yet.
    if _take("before_publish", str(stored.event["command_id"])):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return stored


_real_handle = runtime.Runtime.handle


def _handle(self: runtime.Runtime, payload: object) -> Any:
    command_id = payload.get("command_id") if isinstance(payload, dict) else None
    if isinstance(command_id, str) and command_id.startswith(POISON_PREFIX):
        raise RuntimeError(f"the test poisoned command {command_id}")
    stored = _real_handle(self, payload)
    # Committed and published; Celery acknowledges only after this returns.
    if isinstance(command_id, str) and _take("after_commit", command_id):
        _die()
    return stored


transaction.decide = _decide  # type: ignore[assignment]
runtime.apply_command = _apply_then_maybe_die  # type: ignore[assignment]
runtime.Runtime.handle = _handle  # type: ignore[method-assign]
