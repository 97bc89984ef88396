"""Broker plumbing shared by the client and the subscriptions."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import kombu

from governance.topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    delivery_limit_from,
    queue_arguments,
    queue_type_from,
)

#: The exchange the worker publishes outcome events to (declared identically everywhere:
#: RabbitMQ refuses a redeclaration with different arguments).
EVENTS = kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True)

#: Every outcome event.
ALL_OUTCOMES = "transition.#"


def worker_queue(name: str, environ: Mapping[str, str] | None = None) -> kombu.Queue:
    """A queue of the worker's (``governance.commands``, the retry, maintenance or dead-letter
    queue), declared with the arguments the worker declares it with: of the type
    ``GOVERNANCE_QUEUE_TYPE`` names, the delivery limit ``GOVERNANCE_DELIVERY_LIMIT`` sets.
    Set them in the producer's environment as in the worker's."""
    env = os.environ if environ is None else environ
    arguments = queue_arguments(name, queue_type_from(env), delivery_limit=delivery_limit_from(env))
    if name == DEAD_LETTER_QUEUE:
        # Reached through the default exchange, as the worker publishes to it.
        exchange = kombu.Exchange("")
    else:
        exchange = kombu.Exchange(name, type="direct")
    return kombu.Queue(name, exchange, routing_key=name, durable=True, queue_arguments=arguments)


def decode_event(body: Any) -> dict[str, Any] | None:
    """The event dict of a message body, or None when it is not a JSON object."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return body if isinstance(body, dict) else None
