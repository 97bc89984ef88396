"""A plain Celery client, configured as the README tells any producer to configure one."""

from __future__ import annotations

from typing import Any

import kombu
from celery import Celery

from governance.topology import COMMANDS_QUEUE, MAINTENANCE_QUEUE


def plain_client(broker_url: str, **conf: Any) -> Celery:
    """A Celery app that sends to the worker's queues without declaring them: a quorum queue
    refuses the default-argument declaration a plain client would otherwise make."""
    app = Celery(broker=broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[
            kombu.Queue(COMMANDS_QUEUE, no_declare=True),
            kombu.Queue(MAINTENANCE_QUEUE, no_declare=True),
        ],
        **conf,
    )
    return app
