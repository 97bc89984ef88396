"""The Celery settings the baseline apps share with the governance worker, in one place, so
that the baselines differ from it only in what their task does."""

from __future__ import annotations

import os

from celery import Celery


def baseline_app(name: str, queue: str) -> Celery:
    """A Celery app on ``GOVERNANCE_BROKER_URL`` with the worker's serializer, ``acks_late``
    and prefetch, whose tasks go to ``queue``."""
    app = Celery(name, set_as_current=False)
    app.conf.update(
        broker_url=os.environ.get("GOVERNANCE_BROKER_URL"),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=int(os.environ.get("GOVERNANCE_PREFETCH_MULTIPLIER", "8")),
        task_default_queue=queue,
    )
    return app
