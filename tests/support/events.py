"""Listening to ``governance.events`` from a test: a private queue bound to every outcome."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import kombu

from governance.topology import EVENTS_EXCHANGE

EVENTS = kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


class EventListener:
    """Collects every event published while it is open, in arrival order."""

    def __init__(self, broker_url: str, binding: str = "transition.#") -> None:
        self.connection = kombu.Connection(broker_url)
        self.queue = kombu.Queue(
            f"test-events-{uuid.uuid4().hex[:8]}",
            EVENTS,
            routing_key=binding,
            exclusive=True,
            auto_delete=True,
        )
        self.events: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self._consumer = kombu.Consumer(
            self.connection.channel(),
            [self.queue],
            # The raw body, decoded as plain JSON, as the client library does.
            on_message=lambda message: self._on_message(message.body, message),
            accept=["json"],
        )
        self._consumer.consume()

    def _on_message(self, body: Any, message: kombu.Message) -> None:
        event = json.loads(body) if isinstance(body, str | bytes) else body
        self.events.append(event)
        self.messages.append(
            {
                "routing_key": message.delivery_info.get("routing_key"),
                "message_id": message.properties.get("message_id"),
                "content_type": message.content_type,
                "delivery_mode": message.properties.get("delivery_mode"),
            }
        )
        message.ack()

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=min(left, 0.2))

    def wait_for(
        self, command_ids: Iterable[str], timeout: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        """Wait until each command has an outcome event; return the first for each."""
        wanted = set(command_ids)
        deadline = time.monotonic() + timeout
        while True:
            found = {e["command_id"]: e for e in reversed(self.events) if e["command_id"] in wanted}
            if len(found) == len(wanted):
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(wanted - set(found))
                raise TimeoutError(f"{len(missing)} command(s) without an outcome: {missing[:5]}")
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=min(left, 0.5))

    def of(self, command_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["command_id"] == command_id]

    def close(self) -> None:
        try:
            self._consumer.cancel()
        finally:
            self.connection.release()


def published(body: dict[str, Any], sequence: int) -> dict[str, Any]:
    """``body`` as a worker publishes it: with its ``sequence``, signed by the tests' worker
    key."""
    from governance.events import with_sequence
    from producer.signing import sign_event
    from tests.support.identities import worker_key

    return sign_event(with_sequence(body, sequence), worker_key())
