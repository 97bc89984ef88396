"""Broker plumbing shared by the client and the subscriptions."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import kombu
from amqp.exceptions import NotFound

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

#: The same exchange, only looked up when a queue is bound to it: binding needs no right to
#: declare (or delete) the worker's exchange, which producers and subscribers lack. Call
#: :func:`ensure_declared` first, so that it exists.
EVENTS_TO_BIND = kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True, passive=True)

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


def ensure_declared(connection: kombu.Connection, entity: kombu.Exchange | kombu.Queue) -> None:
    """Make sure ``entity`` (an exchange, or a queue with its exchange and binding) exists.

    The worker declares its topology; a client only looks it up (a passive declare, which
    needs no permission), so that a client whose broker user may not configure the worker's
    queues and exchanges (a producer, a subscriber, an operator) works once a worker ran.
    Only where it is missing does the client declare it, as the worker would: a broker user
    allowed to (an administrator, a development setup) can send before any worker started;
    another gets ``ACCESS_REFUSED`` naming what is missing.
    """
    try:
        with connection.channel() as channel:
            if isinstance(entity, kombu.Queue):
                entity.bind(channel).queue_declare(passive=True)
            else:
                entity.bind(channel).declare(passive=True)
        return
    except NotFound:
        pass  # the broker closed that channel; declare on a new one
    except kombu.exceptions.ChannelError as exc:
        # The in-memory transport (the demo's) says NOT_FOUND with its own exception.
        if "NOT_FOUND" not in str(exc):
            raise
    with connection.channel() as channel:
        entity.bind(channel).declare()


def decode_event(body: Any) -> dict[str, Any] | None:
    """The event dict of a message body, or None when it is not a JSON object."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return body if isinstance(body, dict) else None
