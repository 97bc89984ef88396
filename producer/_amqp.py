"""Broker plumbing shared by the client and the subscriptions."""

from __future__ import annotations

import json
from typing import Any

import kombu

from governance.topology import EVENTS_EXCHANGE

#: The exchange the worker publishes outcome events to (declared identically everywhere:
#: RabbitMQ refuses a redeclaration with different arguments).
EVENTS = kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True)

#: Every outcome event.
ALL_OUTCOMES = "transition.#"


def decode_event(body: Any) -> dict[str, Any] | None:
    """The event dict of a message body, or None when it is not a JSON object."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return body if isinstance(body, dict) else None
