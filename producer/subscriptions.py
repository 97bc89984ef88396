"""Following the outcome events: filtered, deduplicated, live or replayed from the log.

A :class:`Subscription` consumes ``governance.events`` through its own queue:

- anonymous (``name=None``): an exclusive, auto-delete queue that lives as long as the
  subscription; events published while nobody listens are not kept;
- durable (``name="audit"``): the durable queue ``governance.subscription.audit``. It keeps
  collecting while the subscriber is down, so a restarted subscriber with the same name
  resumes where it stopped. An event is acknowledged only once the next one is asked for
  (or on :meth:`Subscription.close`), so an event being handled when the process dies is
  delivered again: delivery is at-least-once, and duplicates are dropped by ``event_id``.
  The queue keeps every binding it was ever created with (RabbitMQ adds bindings, never
  removes them), so reuse a name with the same filter; the filter is also applied per event.
  It is a quorum queue (a classic one under ``GOVERNANCE_QUEUE_TYPE=classic``), bounded:
  past ``max_length`` events the oldest are dropped, and an event older than
  ``max_age_seconds`` is dropped unread, so that a subscriber gone for good cannot fill the
  broker. The type and bounds are fixed when the queue is created (RabbitMQ refuses a
  redeclaration with others): to change them, :func:`delete_subscription` and subscribe anew.

A subscription whose connection breaks reconnects, through the next URL of a
``;``-separated list when one is given. A durable one loses nothing (unacknowledged events
come again and are dropped as duplicates); an anonymous one misses what was published while
it was away, as its queue went with its connection.

:func:`replay` reads the event log (the outbox table) from a sequence onwards, in short
pages, and then follows live, without a gap or a duplicate at the seam.

Every event is verified before it is handed out (:mod:`producer.event_proof`): one whose
worker signature does not hold against the trusted worker keys is counted
(``subscription.verifier.refused``), logged and dropped, never delivered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kombu
from opentelemetry import trace
from opentelemetry.propagate import extract

from governance.events import APPLIED, REJECTED, applied_routing_key, rejected_routing_key
from governance.topology import (
    DEFAULT_SUBSCRIPTION_MAX_AGE_SECONDS,
    DEFAULT_SUBSCRIPTION_MAX_LENGTH,
    SUBSCRIPTION_QUEUE_PREFIX,
    queue_type_from,
    subscription_arguments,
)
from producer._amqp import EVENTS, EVENTS_TO_BIND, decode_event, ensure_declared
from producer._closing import Closing
from producer.event_proof import EventVerifier
from producer.queries import read_event_log

log = logging.getLogger(__name__)

_NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,200}")


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber wants; an empty criterion means "any".

    ``outcomes`` holds ``applied`` and/or ``rejected``; ``rejection_codes`` implies rejected
    events only. Outcome, command type and rejection code are turned into binding keys, so
    the broker drops the rest; request and state are checked on each event.
    """

    request_ids: frozenset[str] = frozenset()
    state_ids: frozenset[str] = frozenset()
    outcomes: frozenset[str] = frozenset()
    command_types: frozenset[str] = frozenset()
    rejection_codes: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        request_ids: Iterable[str] = (),
        state_ids: Iterable[str] = (),
        outcomes: Iterable[str] = (),
        command_types: Iterable[str] = (),
        rejection_codes: Iterable[str] = (),
    ) -> EventFilter:
        """A filter from any iterables (``outcomes`` as ``applied``/``rejected``)."""
        wanted = frozenset(o.removeprefix("transition.") for o in outcomes)
        unknown = wanted - {"applied", "rejected"}
        if unknown:
            raise ValueError(f"unknown outcome {sorted(unknown)[0]!r}; use applied or rejected")
        return cls(
            frozenset(request_ids),
            frozenset(state_ids),
            wanted,
            frozenset(command_types),
            frozenset(rejection_codes),
        )

    @property
    def wants_applied(self) -> bool:
        return not self.rejection_codes and (not self.outcomes or "applied" in self.outcomes)

    @property
    def wants_rejected(self) -> bool:
        return not self.outcomes or "rejected" in self.outcomes

    def binding_keys(self) -> list[str]:
        """The routing keys to bind: the broker filters outcome, type and code for us."""
        keys: list[str] = []
        if self.wants_applied:
            if self.command_types:
                keys += [applied_routing_key(t) for t in sorted(self.command_types)]
            else:
                keys.append(f"{APPLIED}.*")
        if self.wants_rejected:
            # The rejected key carries the code, not the command type: the type is checked
            # on the event.
            if self.rejection_codes:
                keys += [rejected_routing_key(c) for c in sorted(self.rejection_codes)]
            else:
                keys.append(f"{REJECTED}.*")
        return keys

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether an event passes every criterion."""
        event_type = event.get("event_type")
        if event_type == APPLIED and not self.wants_applied:
            return False
        if event_type == REJECTED and not self.wants_rejected:
            return False
        if self.command_types and event.get("command_type") not in self.command_types:
            return False
        if self.rejection_codes:
            rejection = event.get("rejection") or {}
            if rejection.get("code") not in self.rejection_codes:
                return False
        if self.request_ids and event.get("request_id") not in self.request_ids:
            return False
        if self.state_ids:
            request = event.get("request") or {}
            if request.get("state_id") not in self.state_ids:
                return False
        return True


ANY_EVENT = EventFilter()


class _SeenIds:
    """The most recent event ids, bounded so a long-running subscriber does not grow."""

    def __init__(self, capacity: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, event_id: str) -> bool:
        """Record an id; False when it was already seen."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


class Subscription(Closing):
    """Outcome events as they are published, filtered and deduplicated by ``event_id``.

    Iterate over it (``for event in subscription``, blocks until :meth:`stop` is called, from
    any thread), take events one at a time with :meth:`get`, or hand them to a callback
    with :meth:`run`. The queue is declared and bound when the subscription is created, so
    every event published after the constructor returns is delivered. Apart from
    :meth:`stop`, use a subscription from one thread.
    """

    def __init__(
        self,
        broker_url: str,
        event_filter: EventFilter = ANY_EVENT,
        *,
        name: str | None = None,
        prefetch: int = 200,
        dedupe_capacity: int = 100_000,
        max_length: int | None = DEFAULT_SUBSCRIPTION_MAX_LENGTH,
        max_age_seconds: float | None = DEFAULT_SUBSCRIPTION_MAX_AGE_SECONDS,
        queue_type: str | None = None,
        verifier: EventVerifier | None = None,
    ) -> None:
        """``max_length``, ``max_age_seconds`` and ``queue_type`` (default: as
        ``GOVERNANCE_QUEUE_TYPE`` says, else quorum) shape a durable subscription's queue;
        None for a bound means none. An anonymous subscription's queue is always a classic,
        exclusive one (a quorum queue cannot be exclusive).

        ``verifier`` judges each event's proof (default
        :meth:`producer.event_proof.EventVerifier.from_environment`: the registry's worker
        keys); an event it refuses is never handed out (see :attr:`verifier` for the
        counts)."""
        self.filter = event_filter
        #: Judges every event before it is handed out: ``verifier.refused`` counts what it
        #: dropped, ``verifier.verified`` what it let through with a proof that holds.
        self.verifier = EventVerifier.from_environment() if verifier is None else verifier
        self._last_verified = False
        self.name = name
        queue_name = (
            subscription_queue_name(name)
            if name is not None
            else f"governance.watch.{uuid.uuid4().hex}"
        )
        # Bound to the worker's exchange, which a subscriber's broker user may read but not
        # declare: looked up (see ensure_declared in _consume), never redeclared.
        bindings = [
            kombu.binding(EVENTS_TO_BIND, routing_key=key) for key in event_filter.binding_keys()
        ]
        arguments = (
            subscription_arguments(
                queue_type_from(os.environ) if queue_type is None else queue_type,
                max_length=max_length,
                max_age_seconds=max_age_seconds,
            )
            if name is not None
            # Pinned: a virtual host whose default type is quorum must not try to make an
            # exclusive queue one.
            else {"x-queue-type": "classic"}
        )
        self.queue = kombu.Queue(
            queue_name,
            bindings=bindings,
            durable=name is not None,
            exclusive=name is None,
            auto_delete=name is None,
            queue_arguments=arguments,
        )
        self._broker_url = broker_url
        self._prefetch = prefetch
        self._buffer: deque[tuple[dict[str, Any] | None, kombu.Message]] = deque()
        self._unacked: kombu.Message | None = None
        self._last_headers: Mapping[str, Any] = {}
        self._seen = _SeenIds(dedupe_capacity)
        self._closed = threading.Event()
        self._connection = kombu.Connection(broker_url)
        self._consumer = self._consume()

    def _consume(self) -> kombu.Consumer:
        ensure_declared(self._connection, EVENTS)
        channel = self._connection.channel()
        channel.basic_qos(0, self._prefetch, False)
        consumer = kombu.Consumer(
            channel,
            [self.queue],
            # The raw body, decoded as plain JSON (see decode_event), not by kombu's decoder.
            on_message=lambda message: self._on_message(message.body, message),
            accept=["json"],
        )
        consumer.consume()
        return consumer

    def _reconnect(self, exc: Exception) -> None:
        """A fresh connection (the next broker of a failover list first) and consumer.
        What the old channel delivered and we did not acknowledge comes again (durable) or
        is lost with the queue (anonymous); what was buffered is still handed out."""
        log.warning("subscription lost the broker (%s); reconnecting", exc)
        with contextlib.suppress(Exception):
            self._connection.release()
        self._unacked = None
        while not self._closed.is_set():
            self._connection = kombu.Connection(self._broker_url)
            try:
                self._connection.ensure_connection(max_retries=3)
                self._consumer = self._consume()
                return
            except self._connection.recoverable_connection_errors as again:
                log.warning("subscription could not reconnect yet (%s)", again)
                with contextlib.suppress(Exception):
                    self._connection.release()
                self._closed.wait(0.5)

    def _on_message(self, body: Any, message: kombu.Message) -> None:
        self._buffer.append((decode_event(body), message))

    def _ack(self, message: kombu.Message) -> None:
        # A message of a channel that has since been lost cannot be acknowledged; a durable
        # queue delivers it again, and it is dropped then as a duplicate.
        with contextlib.suppress(*self._connection.recoverable_connection_errors):
            message.ack()

    def _consuming(self) -> bool:
        """Whether our consumer's channel still lives on the connection we drain. kombu
        reconnects a connection that broke (a failed acknowledgement is enough) quietly, on
        its next use, and on the new one nothing is consumed."""
        channel = self._consumer.channel
        carrier = getattr(channel, "connection", None)
        if carrier is None or not getattr(channel, "is_open", True):
            return False
        try:
            return carrier is self._connection.connection
        except self._connection.recoverable_connection_errors:
            return False

    def _ack_pending(self) -> None:
        if self._unacked is not None:
            self._ack(self._unacked)
            self._unacked = None

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next new event that passes the filter, or None after ``timeout`` seconds.

        Asking for the next event acknowledges the previous one.
        """
        self._ack_pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            while self._buffer:
                event, message = self._buffer.popleft()
                if event is None or not self.filter.matches(event):
                    self._ack(message)
                    continue
                # Judged before it is taken as seen: a forged copy carrying a genuine
                # event's id must not shadow the genuine one.
                verdict = self.verifier.judge(event)
                if not verdict.accepted:
                    self._ack(message)
                    continue
                if not self._seen.add(str(event.get("event_id"))):
                    self._ack(message)
                    continue
                self._unacked = message
                self._last_headers = message.headers or {}
                self._last_verified = verdict.verified
                return event
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not self._consuming():
                self._reconnect(ConnectionError("the consuming channel is gone"))
                continue
            try:
                self._connection.drain_events(timeout=0.25 if left is None else min(left, 0.25))
            except TimeoutError:
                continue
            except self._connection.recoverable_connection_errors as exc:
                self._reconnect(exc)
        return None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def last_headers(self) -> Mapping[str, Any]:
        """The message headers of the event last handed out: its ``sequence`` and, when the
        command was traced, the ``traceparent`` of the worker's span (see
        :func:`event_span`)."""
        return self._last_headers

    @property
    def last_verified(self) -> bool:
        """Whether the event last handed out carried a proof that verified (False only for
        an unsigned event accepted in development mode)."""
        return self._last_verified

    def mark_seen(self, event_id: str) -> None:
        """Treat an event as already delivered (used at the replay seam)."""
        self._seen.add(event_id)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self._closed.is_set():
            event = self.get(timeout=0.5)
            if event is not None:
                yield event

    def run(self, callback: Callable[[dict[str, Any]], object]) -> None:
        """Call ``callback`` with each event until :meth:`stop`; an event is acknowledged only
        after its callback returned."""
        for event in self:
            callback(event)

    def stop(self) -> None:
        """Make the iterator and :meth:`run` return (callable from any thread)."""
        self._closed.set()

    def close(self) -> None:
        """Acknowledge the event last handed out and disconnect. A durable subscription's
        queue stays and keeps collecting events."""
        self._closed.set()
        try:
            self._ack_pending()
            # Unacknowledged prefetched messages go back to a durable queue on disconnect
            # (and to a broker that went away, the connection is gone already).
            with contextlib.suppress(*self._connection.recoverable_connection_errors):
                self._consumer.cancel()
        finally:
            self._connection.release()

    def delete(self) -> None:
        """Remove a durable subscription's queue for good (events it held are lost)."""
        with kombu.Connection(self._broker_url) as conn:
            self.queue.bind(conn.channel()).delete()


@contextlib.contextmanager
def event_span(
    headers: Mapping[str, Any],
    name: str = "governance.handle_event",
    *,
    continue_trace: bool = False,
) -> Iterator[trace.Span]:
    """A span for handling an outcome event, tied to the command that caused it through the
    event's ``traceparent`` header (``subscription.last_headers``): linked to the worker's
    span for the command, or with ``continue_trace`` its child in the same trace. Without an
    OpenTelemetry SDK it is the API's no-op span."""
    traceparent = headers.get("traceparent")
    carried = (
        trace.get_current_span(extract({"traceparent": traceparent})).get_span_context()
        if isinstance(traceparent, str)
        else None
    )
    tracer = trace.get_tracer("governance.subscriber")
    if carried is not None and carried.is_valid and continue_trace:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(carried))
        with tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.CONSUMER
        ) as span:
            yield span
        return
    links = [trace.Link(carried)] if carried is not None and carried.is_valid else []
    with tracer.start_as_current_span(name, links=links, kind=trace.SpanKind.CONSUMER) as span:
        yield span


def subscription_queue_name(name: str) -> str:
    """The queue of the durable subscription ``name``."""
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"subscription name must match {_NAME_PATTERN.pattern}")
    return SUBSCRIPTION_QUEUE_PREFIX + name


def delete_subscription(broker_url: str, name: str) -> bool:
    """Remove the durable subscription ``name`` for good, with the events it held; False when
    there is none of that name. A subscriber still consuming it is cut off."""
    queue_name = subscription_queue_name(name)
    with kombu.Connection(broker_url) as connection:
        channel = connection.channel()
        try:
            channel.queue_declare(queue_name, passive=True)
        except connection.channel_errors:
            return False
        connection.channel().queue_delete(queue_name)
    return True


class Replay(Closing):
    """The event log from ``since_sequence`` onwards, then live events: see :func:`replay`.

    Why the seam has no gap: the live queue is bound first (at ``B``), and from then on every
    published event is kept in it. The log is then read in pages of ``batch_size``
    (``producer.queries.read_event_log``), and the history ends once a snapshot taken by the
    first page, so after ``B``, is caught up with: every event committed before ``B`` is
    committed in that snapshot and comes from the log. An event the snapshot does not see
    commits after it, so after ``B``, and the worker (or the relay) publishes an event only
    after its commit, so it is in the live queue. An event in both halves (committed around
    the bind, or committed earlier but published after it) is dropped from the live half by
    ``event_id``. Each page is a short statement of its own, so a late subscriber that takes
    its time over a long history holds no snapshot open (nothing holds back vacuum), and
    events committed while it reads wait in the live queue.
    """

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        since_sequence: int,
        event_filter: EventFilter = ANY_EVENT,
        *,
        batch_size: int = 1_000,
        verifier: EventVerifier | None = None,
    ) -> None:
        if verifier is None:
            verifier = EventVerifier.registry(database_url)
        self.verifier = verifier
        # 1. Bind the live queue first: from now on every published event is buffered in it.
        self.live = Subscription(broker_url, event_filter, verifier=verifier)
        # Lazy: the first page, and with it the snapshot the history ends at, is read on the
        # first get(), after the bind.
        self._history = read_event_log(database_url, since_sequence, batch_size=batch_size)
        self.filter = event_filter
        self.replayed = 0

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event: from the log while it lasts, then live (None after ``timeout``
        seconds without a live event)."""
        # 2. The log, page by page, up to a snapshot taken after the bind.
        for event in self._history:
            if not self.verifier.admit(event, live=False):
                continue
            # Live copies of what the log already gave are dropped by event_id.
            self.live.mark_seen(str(event["event_id"]))
            if self.filter.matches(event):
                self.replayed += 1
                return event
        # 3. Live: everything that snapshot did not see was committed after it, hence
        # published after the bind, hence is in the live queue.
        return self.live.get(timeout)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self.live.closed:
            event = self.get(timeout=0.5)
            if event is not None:
                yield event

    def stop(self) -> None:
        self.live.stop()

    def close(self) -> None:
        """Stop reading the log (its connection closes) and disconnect from the broker."""
        self._history.close()
        self.live.close()


def replay(
    database_url: str,
    broker_url: str,
    since_sequence: int = 0,
    event_filter: EventFilter = ANY_EVENT,
    *,
    batch_size: int = 1_000,
    verifier: EventVerifier | None = None,
) -> Replay:
    """Every event with ``sequence > since_sequence`` from the log, then live events, each
    exactly once, per request in revision order. The log is read in pages of ``batch_size``
    events, each its own short statement. Iterate the result; close it when done.

    Every event is verified (``verifier``, default the registry's worker keys on
    ``database_url``); one that does not verify is counted, logged and skipped."""
    return Replay(
        database_url,
        broker_url,
        since_sequence,
        event_filter,
        batch_size=batch_size,
        verifier=verifier,
    )
