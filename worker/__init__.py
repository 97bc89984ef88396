"""The governance worker: Celery tasks applying transition commands in guarded PostgreSQL
transactions, with an idempotency ledger and a transactional outbox.

``celery -A worker worker`` finds :data:`app` here; it is imported lazily so the rest of the
package (the transaction, the schema) can be used without configuring Celery.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
