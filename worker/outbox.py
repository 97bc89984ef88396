"""Publishing outcome events from the outbox: right after commit, and by the relay's sweep.

Delivery is at least once: an event is marked published only after the broker confirmed it,
so a crash between the two publishes it again later (subscribers dedupe on ``event_id``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kombu
import msgspec
import psycopg
from psycopg.pq import TransactionStatus

from governance.events import with_sequence
from governance.topology import EVENTS_EXCHANGE
from worker import sql
from worker.observability import metrics
from worker.observability.context import trace_context_of
from worker.transaction import StoredOutcome

log = logging.getLogger(__name__)

EVENTS = kombu.Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The message body of an event: compact UTF-8 JSON, keys in the event's own order."""
    return msgspec.json.encode(event)


class PublishFailed(Exception):
    """The broker did not confirm every message (unreachable, or it nacked one)."""


class EventPublisher:
    """Publishes persistent messages with publisher confirms; events go to ``governance.events``.

    A batch is published in one go and its confirms awaited together, which costs about as
    much as one confirmed message. One per process; thread-safe. After a broker fault it
    reconnects on the next call (and, within a call, tries once more on a fresh connection).

    Every wait is bounded: a publish returns or raises :class:`PublishFailed` within
    :attr:`CONFIRM_TIMEOUT` per attempt (plus the connect timeout), and at once while the
    broker blocks publishing (a memory or disk alarm: RabbitMQ stops reading a publishing
    connection and says so with ``connection.blocked``). A connection given up is dropped
    without the closing handshake, which a blocked connection would never answer.
    """

    #: The longest wait for the broker's confirms of one publish attempt, in seconds.
    CONFIRM_TIMEOUT = 10.0
    #: The longest wait for a graceful close (:meth:`close`); past it the socket is dropped.
    CLOSE_TIMEOUT = 2.0
    #: One connection attempt, in seconds.
    CONNECT_TIMEOUT = 5.0

    def __init__(self, broker_url: str, *, confirm_timeout: float | None = None) -> None:
        self._broker_url = broker_url
        self._confirm_timeout = confirm_timeout or self.CONFIRM_TIMEOUT
        self._lock = threading.Lock()
        self._connection: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._confirms = False
        self._published = 0
        self._acked = 0
        self._nacked = False
        #: Why the broker blocks this connection (``connection.blocked``), or None.
        self._blocked: str | None = None

    def publish(self, event: Mapping[str, Any], routing_key: str) -> None:
        """Publish one event and return once the broker has confirmed it; raise if it can't."""
        self.publish_many([(event, routing_key)])

    def publish_many(
        self,
        events: Iterable[tuple[Mapping[str, Any], str]],
        trace_contexts: Mapping[Any, str | None] | None = None,
    ) -> None:
        """Publish events in the order given; return once the broker confirmed them all.

        Each carries its command's trace context as its ``traceparent`` header: from
        ``trace_contexts`` (by ``event_id``, as the outbox rows hold them) when given, else
        from the run in progress."""
        messages = [
            {
                "body": encode_event(event),
                "exchange": EVENTS,
                "routing_key": routing_key,
                "content_type": "application/json",
                "content_encoding": "utf-8",
                "delivery_mode": 2,
                "message_id": event["event_id"],
                "headers": _headers(event, trace_contexts),
            }
            for event, routing_key in events
        ]
        self._send(messages)

    def publish_raw(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        content_type: str,
        headers: dict[str, Any],
        declare: list[kombu.Queue],
    ) -> None:
        """Publish one message as given (confirmed, persistent)."""
        binary = content_type.endswith("octet-stream")
        self._send(
            [
                {
                    "body": body,
                    "exchange": exchange,
                    "routing_key": routing_key,
                    "content_type": content_type,
                    "content_encoding": "binary" if binary else "utf-8",
                    "delivery_mode": 2,
                    "headers": headers,
                    "declare": declare,
                }
            ]
        )

    def _send(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        with self._lock:
            try:
                self._send_confirmed(messages)
            except Exception as first:
                blocked = self._blocked
                self._reset()
                if blocked is not None:
                    # A fresh connection would be blocked as well: say so now.
                    raise PublishFailed(f"the broker blocks publishing: {blocked}") from first
                log.info("publish failed (%s); retrying on a fresh connection", first)
                try:
                    self._send_confirmed(messages)
                except Exception as exc:
                    blocked = self._blocked
                    self._reset()
                    if blocked is not None:
                        raise PublishFailed(f"the broker blocks publishing: {blocked}") from exc
                    raise PublishFailed(str(exc)) from exc

    def _send_confirmed(self, messages: list[dict[str, Any]]) -> None:
        producer = self._ensure_producer()
        for message in messages:
            producer.publish(**message)
            self._published += 1
        if not self._confirms:
            return  # the in-memory transport has no confirms: a publish is already there
        target = self._published
        assert self._connection is not None
        deadline = time.monotonic() + self._confirm_timeout
        while self._acked < target:
            if self._nacked:
                raise PublishFailed("the broker refused (nacked) a message")
            if self._blocked is not None:
                raise PublishFailed(f"the broker blocks publishing: {self._blocked}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(f"not confirmed within {self._confirm_timeout:g}s")
            try:
                # Returns after any frame (a heartbeat, connection.blocked): hence the deadline.
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        # Confirms come in order; with ``multiple`` one covers every earlier tag too.
        self._acked = max(self._acked, delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool, *_: Any) -> None:
        self._nacked = True

    def _on_blocked(self, reason: str) -> None:
        self._blocked = reason or "connection blocked"
        log.warning("the broker blocks publishing: %s", self._blocked)

    def _on_unblocked(self) -> None:
        self._blocked = None
        log.info("the broker takes publishes again")

    def _ensure_producer(self) -> kombu.Producer:
        if self._producer is None:
            self._connection = kombu.Connection(
                self._broker_url,
                connect_timeout=self.CONNECT_TIMEOUT,
                transport_options={
                    "on_blocked": self._on_blocked,
                    "on_unblocked": self._on_unblocked,
                    # A socket the broker stopped reading fills up: a write waits no longer
                    # than a confirm would.
                    "write_timeout": self._confirm_timeout,
                },
            )
            self._blocked = None
            channel = self._connection.channel()
            self._confirms = hasattr(channel, "confirm_select")
            if self._confirms:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
            self._published = self._acked = 0
            self._nacked = False
            self._producer = kombu.Producer(channel)
            EVENTS.declare(channel=channel)
        return self._producer

    def _reset(self) -> None:
        """Give the connection up without the closing handshake: a connection the broker
        blocks (or that is broken) would never answer it."""
        self._producer = None
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()

    def close(self) -> None:
        """Close the connection, waiting at most :attr:`CLOSE_TIMEOUT` for the broker."""
        with self._lock:
            connection = self._connection
            if connection is not None and self._blocked is None:
                with contextlib.suppress(Exception):
                    transport = connection.connection.transport
                    with transport.having_timeout(self.CLOSE_TIMEOUT):
                        connection.release()
                    self._connection = None
            self._reset()


def _headers(
    event: Mapping[str, Any], trace_contexts: Mapping[Any, str | None] | None
) -> dict[str, Any]:
    headers: dict[str, Any] = {"sequence": event.get("sequence")}
    traceparent = (
        trace_contexts.get(event.get("event_id"))
        if trace_contexts is not None
        else trace_context_of(event.get("command_id"))
    )
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


def mark_published(
    conn: psycopg.Connection[Any], sequences: list[int], publisher: str = "writer"
) -> None:
    """Record that these events reached the broker (``publisher``: ``writer`` or ``relay``,
    for the lag metric).

    Without waiting for the WAL flush: a mark lost in a crash only makes the relay publish
    the event once more, which at-least-once delivery allows.
    """
    if conn.info.transaction_status is TransactionStatus.IDLE:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute("SET LOCAL synchronous_commit TO off")
            marked = conn.execute(sql.MARK_PUBLISHED, {"sequences": sequences})
            conn.execute("COMMIT")
    else:
        marked = conn.execute(sql.MARK_PUBLISHED, {"sequences": sequences})
    metrics.outbox_published((lag for (lag,) in marked.fetchall() if lag is not None), publisher)


@dataclass(frozen=True, slots=True)
class Publication:
    """What to do with a committed run's outcome events, so that each request's events reach
    the broker in sequence (hence revision) order."""

    #: Events that may go out at once, in this order: their requests had no unpublished
    #: events when they were locked, so nothing of theirs can be overtaken.
    ready: tuple[StoredOutcome, ...]
    #: Events of requests that had: each goes out after its request's unpublished
    #: predecessors, claimed in sequence order.
    behind: tuple[StoredOutcome, ...]


def publication_plan(outcomes: Sequence[StoredOutcome]) -> Publication:
    """The one publication decision, for a single command, a batch and an expiry sweep alike.

    A recorded outcome (a redelivery) is ordered like any other event of its request: behind
    the request's unpublished events when it has some, at once when it has none. An event that
    appears twice (the same command delivered twice into one batch) is published once for
    each delivery, the copies next to each other in the request's order.
    """
    ready: list[StoredOutcome] = []
    behind: list[StoredOutcome] = []
    blocked: set[str] = set()
    for stored in sorted(outcomes, key=lambda s: s.sequence):
        request_id = stored.request_id
        if request_id is not None and (stored.behind_backlog or request_id in blocked):
            blocked.add(request_id)
            behind.append(stored)
        else:
            ready.append(stored)
    return Publication(tuple(ready), tuple(behind))


def publish_outcomes(
    conn: psycopg.Connection[Any], publisher: EventPublisher, outcomes: Sequence[StoredOutcome]
) -> bool:
    """Publish a committed run's outcome events as :func:`publication_plan` decides, and mark
    them published. ``conn`` must have no transaction open.

    A broker that cannot take them now is not an error of the commands: the rows stay
    unpublished for the relay (or the request's next publisher). Returns whether all went out.
    """
    plan = publication_plan(outcomes)
    went_out = _publish_ready(conn, publisher, plan.ready)
    for stored in plan.behind:
        went_out = _publish_behind_backlog(conn, publisher, stored) and went_out
    return went_out


def _publish_ready(
    conn: psycopg.Connection[Any], publisher: EventPublisher, ready: Sequence[StoredOutcome]
) -> bool:
    if not ready:
        return True
    try:
        publisher.publish_many((s.event, s.routing_key) for s in ready)
    except Exception as exc:  # any broker fault: the rows wait for the relay
        log.warning("%d event(s) left to the relay: %s", len(ready), exc)
        return False
    mark_published(conn, [s.sequence for s in ready])
    return True


def _publish_behind_backlog(
    conn: psycopg.Connection[Any], publisher: EventPublisher, stored: StoredOutcome
) -> bool:
    """Claim the request's unpublished events up to this one in sequence order (waiting for a
    publisher that holds one), publish them oldest first, then this one if it was already
    published (a redelivery announces its outcome again)."""
    try:
        with conn.transaction():
            conn.execute(sql.PUBLISHING_TRANSACTION)
            backlog: list[tuple[int, str, Mapping[str, Any], str | None]] = conn.execute(
                sql.CLAIM_REQUEST_BACKLOG,
                {"request_id": stored.request_id, "sequence": stored.sequence},
            ).fetchall()
            batch: list[tuple[Mapping[str, Any], str]] = [
                (with_sequence(body, seq), key) for seq, key, body, _ in backlog
            ]
            traces = {body.get("event_id"): trace for _, _, body, trace in backlog}
            if not any(seq == stored.sequence for seq, _, _, _ in backlog):
                batch.append((stored.event, stored.routing_key))
                traces[stored.event.get("event_id")] = trace_context_of(
                    stored.event.get("command_id")
                )
            publisher.publish_many(batch, traces)
            if backlog:
                mark_published(conn, [seq for seq, _, _, _ in backlog])
    except psycopg.Error:
        raise
    except Exception as exc:  # any broker fault: the rows wait for the relay
        log.warning("event %s left to the relay: %s", stored.event.get("event_id"), exc)
        return False
    return True


def relay_unpublished(
    conn: psycopg.Connection[Any],
    publisher: EventPublisher,
    *,
    batch_size: int = 500,
    grace_seconds: float = 2.0,
) -> int:
    """Publish outbox rows their writer did not (killed, broker down); return how many.

    Rows are claimed oldest first with ``FOR UPDATE SKIP LOCKED`` so several relays share the
    backlog, and marked published in the claiming transaction. For each request only the
    claimed rows before its first unclaimed unpublished one go out, so the relay never
    overtakes an earlier event that someone else is publishing.
    """
    total = 0
    while True:
        with conn.transaction():
            conn.execute(sql.PUBLISHING_TRANSACTION)
            claimed = conn.execute(
                sql.CLAIM_UNPUBLISHED, {"batch_size": batch_size, "grace_seconds": grace_seconds}
            ).fetchall()
            if not claimed:
                return total
            publishable = _request_ordered_prefix(conn, claimed)
            publisher.publish_many(
                ((with_sequence(body, seq), key) for seq, key, body, _, _ in publishable),
                {body.get("event_id"): trace for _, _, body, _, trace in publishable},
            )
            mark_published(conn, [row[0] for row in publishable], "relay")
        total += len(publishable)
        if len(claimed) < batch_size or not publishable:
            return total


def _request_ordered_prefix(
    conn: psycopg.Connection[Any], claimed: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    claimed_sequences = {row[0] for row in claimed}
    request_ids = sorted({row[3] for row in claimed if row[3] is not None})
    blocked_from: dict[str, int] = {}
    if request_ids:
        for request_id, seq in conn.execute(
            sql.UNPUBLISHED_OF_REQUESTS, {"request_ids": request_ids}
        ).fetchall():
            if seq not in claimed_sequences and request_id not in blocked_from:
                blocked_from[request_id] = seq
    return [
        row for row in claimed if row[3] is None or row[0] < blocked_from.get(row[3], row[0] + 1)
    ]
