"""The dead-letter queue: messages that cannot be answered by an event, kept with a reason."""

from __future__ import annotations

from typing import Any

import kombu

from governance.topology import DEAD_LETTER_QUEUE, DEAD_LETTER_REASON_HEADER
from worker.outbox import EventPublisher

DEAD_LETTERS = kombu.Queue(
    DEAD_LETTER_QUEUE, exchange=kombu.Exchange(""), routing_key=DEAD_LETTER_QUEUE, durable=True
)


def publish(
    publisher: EventPublisher,
    body: bytes,
    content_type: str | None,
    reason: str,
    headers: dict[str, Any],
) -> None:
    """Put ``body`` on ``governance.commands.dead`` as it arrived, with the reason in a header."""
    publisher.publish_raw(
        body,
        exchange="",
        routing_key=DEAD_LETTER_QUEUE,
        content_type=content_type or "application/octet-stream",
        headers={**headers, DEAD_LETTER_REASON_HEADER: reason[:1000]},
        declare=[DEAD_LETTERS],
    )
