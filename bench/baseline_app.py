"""The Celery settings the baseline apps share with the governance worker, in one place, so
that the baselines differ from it only in what their task does."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from governance.topology import DEFAULT_QUEUE_TYPE, QUORUM


def baseline_app(name: str, queue: str) -> Celery:
    """A Celery app on ``GOVERNANCE_BROKER_URL`` with the worker's serializer, ``acks_late``,
    prefetch and queue type (``GOVERNANCE_QUEUE_TYPE``, quorum by default), whose tasks go
    to ``queue``."""
    queue_type = os.environ.get("GOVERNANCE_QUEUE_TYPE", DEFAULT_QUEUE_TYPE)
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
        task_queues=[
            Queue(queue, queue_arguments={"x-queue-type": QUORUM} if queue_type == QUORUM else None)
        ],
        # A quorum queue refuses global QoS: the prefetch is set per consumer instead.
        worker_detect_quorum_queues=True,
    )
    return app
