"""A test-only Celery app: the real worker app, with faults at named points.

Run as ``celery -A tests.system.faults_app worker``. It imports the production app unchanged
and wraps, in this process only, the functions a command passes through, so a test can make
a worker die (or freeze) exactly where a real crash could stop it:

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

Commands whose ``command_id`` starts with ``poison-`` make the handler raise every time;
``killer-`` ones make the process applying them SIGKILL itself every time (holding the row
lock); ``limit-`` ones make the database refuse the transaction for exceeding a program limit
(SQLSTATE 54000) every time.

In batch mode (``GOVERNANCE_BATCH_SIZE`` > 1) commands are applied in the worker's main
process, so ``after_commit`` and ``before_publish`` kill the whole worker there too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tests.support.faults import KILLER_PREFIX, LIMIT_PREFIX, POISON_PREFIX
from worker import batching, runtime, transaction
from worker.app import app

__all__ = ["app"]

_FAULT_DIR = os.environ.get("GOVERNANCE_TEST_FAULT_DIR")
#: The worker's main process (imported there; pool children inherit it).
_MAIN_PID = os.getpid()
_EXPIRE_KILL_AFTER = int(os.environ.get("GOVERNANCE_TEST_EXPIRE_KILL_AFTER", "20"))
#: Fails with ProgramLimitExceeded (54000): an array larger than PostgreSQL allows.
_OVER_A_LIMIT = "SELECT array_fill(1, ARRAY[200000000])"


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


def _kill_worker() -> None:
    """SIGKILL the whole worker: main process and children."""
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _command_id(payload: object) -> str | None:
    command_id = payload.get("command_id") if isinstance(payload, dict) else None
    return command_id if isinstance(command_id, str) else None


_real_decide = transaction.decide


class _Expiries:
    decided = 0


def _decide(current: Any, command: Any, now: Any, *args: Any, **kwargs: Any) -> Any:
    # Called with the row locked: the transaction is open and holds FOR UPDATE.
    if command.type.value == "expire" and command.actor.id == "system":
        _Expiries.decided += 1
        if _Expiries.decided >= _EXPIRE_KILL_AFTER and _take("expire_midbatch", "any"):
            _die()
    if _take("holding_lock", command.command_id) or command.command_id.startswith(KILLER_PREFIX):
        _die()
    if _take("pause_holding_lock", command.command_id):
        assert _FAULT_DIR is not None
        marker = Path(_FAULT_DIR) / f"paused.{command.command_id}"
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)
    return _real_decide(current, command, now, *args, **kwargs)


_real_apply_commands = batching.apply_commands


def _apply_commands(conn: Any, payloads: Any, *args: Any) -> Any:
    for payload in payloads:
        command_id = _command_id(payload) or ""
        if command_id.startswith(POISON_PREFIX):
            raise RuntimeError(f"the test poisoned command {command_id}")
        if command_id.startswith(LIMIT_PREFIX):
            conn.execute(_OVER_A_LIMIT)
    return _real_apply_commands(conn, payloads, *args)


_real_apply_batch = batching.apply_batch


def _apply_batch_then_maybe_die(conn: Any, payloads: Any, *args: Any) -> Any:
    results = _real_apply_batch(conn, payloads, *args)
    # Committed; nothing published yet.
    if any(_take("before_publish", _command_id(p) or "") for p in payloads):
        _kill_worker()
    return results


_real_handle_batch = runtime.Runtime.handle_batch


def _handle_batch(self: runtime.Runtime, payloads: list[object]) -> Any:
    results = _real_handle_batch(self, payloads)
    # Committed and published; the message is acknowledged only after this returns.
    if any(_take("after_commit", _command_id(p) or "") for p in payloads):
        if os.getpid() != _MAIN_PID:
            _die()  # a pool child (per-task mode, the retry queue): that child alone
        _kill_worker()
    return results


transaction.decide = _decide  # type: ignore[assignment]
batching.apply_commands = _apply_commands  # type: ignore[assignment]
batching.apply_batch = _apply_batch_then_maybe_die  # type: ignore[assignment]
runtime.Runtime.handle_batch = _handle_batch  # type: ignore[method-assign]
