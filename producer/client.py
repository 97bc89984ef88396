"""``GovernanceClient``: build, validate, publish and await transition commands.

Typical use::

    with GovernanceClient(broker_url) as client:
        command = client.approve("req-42", expected_revision=3, actor="alice")
        event = client.send_and_wait(command, timeout=30)

The builder methods (``submit``, ``approve``, ...) only build and validate: they return a
:class:`governance.commands.Command` and raise :class:`InvalidCommand` before anything is
sent. :meth:`GovernanceClient.send` publishes a command; :meth:`GovernanceClient.send_and_wait`
publishes it and returns its outcome event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import kombu
from amqp.exceptions import MessageNacked
from celery import Celery
from opentelemetry import trace
from opentelemetry.propagate import inject

from governance import urls
from governance.codec import command_to_dict, timestamp_to_wire
from governance.commands import Command, check_timestamp, parse_command
from governance.model import Actor
from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE, DEFAULT_AUDIENCE
from producer._amqp import (
    ALL_OUTCOMES,
    EVENTS,
    EVENTS_TO_BIND,
    decode_event,
    ensure_declared,
    worker_queue,
)
from producer._closing import Closing
from producer.event_proof import EventVerifier
from producer.keys import SigningKey, load_key_file
from producer.outcomes import AwaitedCommand, OutcomeTimeout
from producer.queries import Queries
from producer.signing import sign_command

log = logging.getLogger(__name__)

ActorLike = str | Actor | Mapping[str, Any]
CommandLike = Command | Mapping[str, Any]
#: A key, a key file's path, or a keyring (actor id → key) for a client acting for several.
SigningKeyLike = SigningKey | str | os.PathLike[str] | Mapping[str, SigningKey]

_TRACER = trace.get_tracer("governance.producer")

DEFAULT_TIMEOUT = 30.0
#: Publishes of one command before a failure to get it confirmed is raised.
PUBLISH_ATTEMPTS = 5
DEFAULT_RESEND_ATTEMPTS = 2
#: The longest one publish attempt waits to write or to be confirmed, in seconds: through a
#: broker alarm (or on a paused minority node) a publish fails instead of waiting it out.
DEFAULT_CONFIRM_TIMEOUT = 10.0


def _tracing() -> bool:
    """Whether an OpenTelemetry SDK is installed (the API's no-op provider costs nothing)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def actor_payload(actor: ActorLike) -> dict[str, Any]:
    """The wire form of an actor given as an id, an :class:`Actor` or a dict."""
    if isinstance(actor, str):
        return {"id": actor}
    if isinstance(actor, Actor):
        body: dict[str, Any] = {"id": actor.id, "type": actor.type.value}
        if actor.name is not None:
            body["name"] = actor.name
        return body
    return dict(actor)


def _wire_timestamp(value: datetime | None, field: str) -> str | None:
    """``value`` in the wire spelling, or None; raises ``InvalidCommand`` naming ``field`` for
    an instant a command may not name (one not even representable in UTC included)."""
    return None if value is None else timestamp_to_wire(check_timestamp(value, field))


def as_command(command: CommandLike) -> Command:
    """A validated command from a :class:`Command` or a raw payload dict."""
    return command if isinstance(command, Command) else parse_command(dict(command))


class _Waiter:
    """One awaited command: the outcome lands here and its index is put on ``arrivals``."""

    __slots__ = ("arrivals", "awaited", "event", "index")

    def __init__(
        self, awaited: AwaitedCommand, index: int, arrivals: queue.SimpleQueue[int]
    ) -> None:
        self.awaited = awaited
        self.index = index
        self.arrivals = arrivals
        self.event: dict[str, Any] | None = None


class OutcomeListener:
    """One consumer thread that hands outcome events to the threads awaiting them.

    It listens on an exclusive, auto-delete queue bound to every outcome (``transition.#``)
    and hands each event to the waiters it answers (:class:`producer.outcomes.AwaitedCommand`:
    by ``command_id`` and actor, and only an authenticated event or one naming a message the
    waiter sent). The queue is bound before :meth:`start` returns, so a
    waiter registered before its command is sent cannot miss the outcome. If the broker
    connection drops, the queue is re-declared on reconnection; an outcome published in
    between is recovered by the caller's re-send (the worker re-publishes the recorded
    outcome of a known command).
    """

    def __init__(self, broker_url: str, verifier: EventVerifier | None = None) -> None:
        self._broker_url = broker_url
        #: Judges every outcome before it is handed to a waiter (see producer.event_proof).
        self.verifier = EventVerifier.from_environment() if verifier is None else verifier
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="governance-outcomes", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"could not subscribe to outcome events within {timeout:g}s")
        if self._error is not None:
            raise self._error

    def register(
        self, awaited: AwaitedCommand, index: int, arrivals: queue.SimpleQueue[int]
    ) -> _Waiter:
        """Await the outcome of ``awaited`` (note each message sent for it with its
        :meth:`~producer.outcomes.AwaitedCommand.sending`): once it arrives, the waiter holds
        it and ``index`` is put on ``arrivals``."""
        waiter = _Waiter(awaited, index, arrivals)
        with self._lock:
            self._waiters.setdefault(awaited.command_id, []).append(waiter)
        return waiter

    def unregister(self, command_id: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(command_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[command_id]

    def _dispatch(self, body: Any, message: kombu.Message) -> None:
        event = decode_event(body)
        message.ack()
        # A forged outcome must neither answer a waiter nor use up its slot: the genuine
        # one may still come.
        if event is None or not self.verifier.admit(event):
            return
        command_id = str(event.get("command_id"))
        with self._lock:
            waiting = self._waiters.get(command_id, [])
            # Another actor's command with the same command_id, or an unproved copy, answers
            # nobody here: its waiters keep waiting for their own outcome.
            answered = [w for w in waiting if w.awaited.answered_by(event)]
            if answered:
                left = [w for w in waiting if w not in answered]
                if left:
                    self._waiters[command_id] = left
                else:
                    del self._waiters[command_id]
        for waiter in answered:
            waiter.event = event
            waiter.arrivals.put(waiter.index)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with kombu.Connection(self._broker_url) as connection:
                    # Only looked up where it exists: a producer may bind to the worker's
                    # exchange but not declare it.
                    ensure_declared(connection, EVENTS)
                    queue = kombu.Queue(
                        # A name of the prefix a producer's broker user may declare.
                        f"governance.producer.{uuid.uuid4().hex}",
                        EVENTS_TO_BIND,
                        routing_key=ALL_OUTCOMES,
                        exclusive=True,
                        auto_delete=True,
                        # Exclusive, so classic even where the vhost's default is quorum.
                        queue_arguments={"x-queue-type": "classic"},
                    )
                    with kombu.Consumer(
                        connection.channel(),
                        [queue],
                        # The raw body, decoded as plain JSON by decode_event: kombu's own
                        # decoder would turn metadata shaped like its type markers into
                        # bytes, or refuse the event and break the listener.
                        on_message=lambda message: self._dispatch(message.body, message),
                        accept=["json"],
                    ):
                        self._ready.set()
                        while not self._stop.is_set():
                            with contextlib.suppress(TimeoutError):
                                connection.drain_events(timeout=0.25)
            except Exception as exc:
                if not self._ready.is_set():
                    self._error = exc
                    self._ready.set()
                    return
                log.warning("outcome listener lost the broker (%s); reconnecting", exc)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class BuildTransition(Protocol):
    """The signature of every builder :class:`TransitionBuilder` makes; ``args`` are the
    command type's own arguments, by name (``approval_id=...``, ``strategy=...``)."""

    def __call__(
        self,
        request_id: str,
        /,
        *,
        expected_revision: int,
        actor: ActorLike,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        command_id: str | None = None,
        **args: Any,
    ) -> Command: ...


class TransitionBuilder:
    """A builder method of :class:`GovernanceClient` for one command type on an existing
    request: its ``args`` are the keyword arguments named ``required`` and ``optional``.

    A ``datetime`` argument is sent in the wire spelling, checked like any instant a command
    names. An argument the type does not take, or a required one left out, is a
    ``TypeError`` as for any Python call: it is the caller's mistake, not the command's.
    """

    def __init__(
        self,
        type_: str,
        summary: str,
        *,
        required: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
    ) -> None:
        self.type = type_
        self.required = required
        self.optional = optional
        self.__doc__ = f"A ``{type_}`` command {summary}."

    def __get__(self, client: GovernanceClient | None, owner: type) -> BuildTransition:
        if client is None:
            return self  # type: ignore[return-value]  # the table itself, on the class
        return functools.partial(self._build, client)

    def _build(
        self,
        client: GovernanceClient,
        request_id: str,
        /,
        *,
        expected_revision: int,
        actor: ActorLike,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        command_id: str | None = None,
        **given: Any,
    ) -> Command:
        unknown = sorted(set(given) - set(self.required) - set(self.optional))
        if unknown:
            raise TypeError(f"{self.type}() got an unexpected keyword argument {unknown[0]!r}")
        missing = [name for name in self.required if name not in given]
        if missing:
            raise TypeError(f"{self.type}() missing keyword argument {missing[0]!r}")
        args = {
            name: _wire_timestamp(value, f"args.{name}") if isinstance(value, datetime) else value
            for name, value in given.items()
            if value is not None
        }
        return client.build(
            self.type,
            request_id,
            actor=actor,
            expected_revision=expected_revision,
            args=args,
            reason=reason,
            metadata=metadata,
            command_id=command_id,
        )


class GovernanceClient(Closing):
    """Builds, validates, sends and awaits transition commands.

    ``broker_url`` is the RabbitMQ URL; ``database_url`` is only needed for the read-only
    queries (:attr:`queries`). ``timeout`` and ``resend_attempts`` are the defaults of
    :meth:`send_and_wait`. ``confirm_timeout`` bounds each publish attempt's wait for the
    broker (Celery reconnects and tries again a bounded number of times, then the send
    raises). The client is thread-safe: many threads may send and await at
    once, served by one consumer thread. Use it as a context manager, or call :meth:`close`.

    ``signing_key`` signs every command sent (a :class:`producer.keys.SigningKey`, the path
    of a key file, or a mapping from actor id to key for a client that acts for several
    actors): each command gets ``issued_at``, ``audience`` and ``auth`` just before it is
    published, so a re-send is signed afresh and is still the same command. A command that
    already carries an ``auth`` is sent as it is. Without a key commands go unsigned, which
    only a worker in development mode (``GOVERNANCE_AUTH=off``) accepts.

    Outcomes are acted on only when signed by a registered worker (``event_verifier``,
    default the registry's worker keys on ``database_url``, or the keys file
    ``GOVERNANCE_EVENT_KEYS`` names): a forged outcome is counted, logged and ignored.
    """

    def __init__(
        self,
        broker_url: str,
        database_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        resend_attempts: int = DEFAULT_RESEND_ATTEMPTS,
        signing_key: SigningKeyLike | None = None,
        audience: str = DEFAULT_AUDIENCE,
        event_verifier: EventVerifier | None = None,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
    ) -> None:
        self.broker_url = urls.broker_url(broker_url, "broker_url")
        #: The bound on each publish attempt's write and confirm wait (seconds).
        self.confirm_timeout = confirm_timeout
        self.database_url = (
            None if database_url is None else urls.database_url(database_url, "database_url")
        )
        self.timeout = timeout
        self.resend_attempts = resend_attempts
        self.audience = audience
        if isinstance(signing_key, str | os.PathLike):
            signing_key = load_key_file(signing_key)
        self.signing_key = signing_key
        #: Judges the outcome events :meth:`send_and_wait` acts on: default the registry's
        #: worker keys on ``database_url`` (else as the environment says, see
        #: :meth:`producer.event_proof.EventVerifier.from_environment`).
        self.event_verifier = (
            event_verifier
            if event_verifier is not None
            else EventVerifier.from_environment(self.database_url)
        )
        # A Celery app used purely as a client: it writes the Celery protocol message the
        # worker expects, and with confirm_publish a publish returns only once the broker has
        # taken responsibility for the message.
        # Where the command queue is missing it is declared as the worker declares it (its
        # type and arguments from GOVERNANCE_QUEUE_TYPE / GOVERNANCE_DELIVERY_LIMIT): RabbitMQ
        # refuses a publisher's declaration that differs from the worker's.
        self._intake = worker_queue(COMMANDS_QUEUE)
        self._intake_found = False
        self._app = Celery("governance-producer", broker=self.broker_url, set_as_current=False)
        self._app.conf.update(
            # Every wait on the broker's socket bounded (the confirm, and the closing handshake
            # of a connection given up, which a blocked broker would never answer).
            broker_transport_options={
                "confirm_publish": True,
                "read_timeout": confirm_timeout,
                "write_timeout": confirm_timeout,
            },
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            task_queues=[self._intake],
        )
        self._listener: OutcomeListener | None = None
        self._listener_lock = threading.Lock()
        self._queries: Queries | None = None

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the outcome listener and release broker connections."""
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._app.close()

    @property
    def queries(self) -> Queries:
        """The read-only :class:`producer.queries.Queries` on ``database_url``."""
        if self._queries is None:
            if self.database_url is None:
                raise ValueError("queries need a database_url")
            self._queries = Queries(self.database_url)
        return self._queries

    # ------------------------------------------------------------------ sending

    def send(self, command: CommandLike) -> str:
        """Publish a command (validated first, then signed when the client has a key) with
        publisher confirms; return its id."""
        validated = as_command(command)
        if not _tracing():
            self._publish(self.wire_form(command), None)
            return validated.command_id
        # A span per command sent; its context travels in the message's ``traceparent``
        # header, so the worker's span for the command continues this trace.
        with _TRACER.start_as_current_span(
            "governance.send_command",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "governance.command_id": validated.command_id,
                "governance.request_id": validated.request_id,
                "governance.type": validated.type.value,
            },
        ):
            headers: dict[str, str] = {}
            inject(headers)
            self._publish(self.wire_form(command), headers)
        return validated.command_id

    def _publish(self, payload: dict[str, Any], headers: dict[str, str] | None) -> None:
        """Publish until the broker confirms. A connection lost while publishing is Celery's
        to retry (on the next node of a URL list); a publish the broker nacks, as a quorum
        queue does while it elects a new leader, is sent again here (it is the same command,
        so it is applied once)."""
        self._find_intake()
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self._app.send_task(
                    APPLY_COMMAND_TASK,
                    args=[payload],
                    queue=COMMANDS_QUEUE,
                    # Through the intake's own direct exchange: Celery would otherwise turn a
                    # direct route into the default exchange, which a producer's broker user
                    # may not write to. Declared once by _find_intake, not on every publish.
                    exchange=COMMANDS_QUEUE,
                    routing_key=COMMANDS_QUEUE,
                    declare=[],
                    task_id=str(uuid.uuid4()),
                    headers=headers or None,
                    timeout=self.confirm_timeout,
                    confirm_timeout=self.confirm_timeout,
                )
                return
            except MessageNacked as exc:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                log.warning("publish not confirmed (%s); sending again", exc)
                time.sleep(min(0.2 * 2**attempt, 3.0))

    def _find_intake(self) -> None:
        """Make sure the command queue exists before the first publish (an unrouted command
        would be confirmed and lost): looked up, declared only where it is missing."""
        if self._intake_found:
            return
        with self._app.connection_for_write() as connection:
            # Each failed attempt moves on to the next broker of a failover list.
            connection.ensure_connection(max_retries=PUBLISH_ATTEMPTS)
            ensure_declared(connection, self._intake)
        self._intake_found = True

    def wire_form(self, command: CommandLike) -> dict[str, Any]:
        """The command object exactly as :meth:`send` would publish it now (signed when the
        client has a key for its actor)."""
        validated = as_command(command)
        if validated.auth is not None:
            # Signed already: sent exactly as given, or its signature would no longer hold.
            return dict(command) if isinstance(command, Mapping) else command_to_dict(validated)
        payload = command_to_dict(validated)
        if self.signing_key is None:
            return payload
        key = self._key_for(validated.actor.id)
        return sign_command(payload, key, audience=self.audience)

    def _key_for(self, actor_id: str) -> SigningKey:
        key = self.signing_key
        if isinstance(key, SigningKey):
            return key
        assert key is not None and not isinstance(key, str | os.PathLike)
        try:
            return key[actor_id]
        except KeyError:
            raise ValueError(f"no signing key for actor {actor_id!r}") from None

    def _outcomes(self) -> OutcomeListener:
        with self._listener_lock:
            if self._listener is None:
                listener = OutcomeListener(self.broker_url, self.event_verifier)
                listener.start()
                self._listener = listener
            return self._listener

    def send_and_wait(
        self,
        command: CommandLike,
        timeout: float | None = None,
        *,
        resend_attempts: int | None = None,
    ) -> dict[str, Any]:
        """Publish a command and return its outcome event (applied or rejected).

        ``timeout`` is the whole budget in seconds. It is split into ``resend_attempts + 1``
        equal slices: when a slice passes without an outcome the same command (same
        ``command_id``, same payload, so idempotent) is sent again. When the budget is spent,
        :class:`OutcomeTimeout` (a ``TimeoutError``) is raised. Awaiting never polls the
        database: the outcome arrives as an event.
        """
        (event,) = self.send_all_and_wait([command], timeout, resend_attempts=resend_attempts)
        assert event is not None  # a missing outcome raised OutcomeTimeout
        return event

    def send_all_and_wait(
        self,
        commands: Sequence[CommandLike],
        timeout: float | None = None,
        *,
        resend_attempts: int | None = None,
        on_outcome: Callable[[Command, dict[str, Any]], None] | None = None,
        raise_on_timeout: bool = True,
    ) -> list[dict[str, Any] | None]:
        """Send many commands and await every outcome, in the order given.

        The same budget and re-send rules as :meth:`send_and_wait` apply to the batch as a
        whole. ``on_outcome`` is called (in this thread) as outcomes arrive. With
        ``raise_on_timeout=False`` a command left without an outcome gives None instead of an
        :class:`OutcomeTimeout`.
        """
        originals = list(commands)
        validated = [as_command(c) for c in originals]
        budget = self.timeout if timeout is None else timeout
        resends = self.resend_attempts if resend_attempts is None else resend_attempts
        listener = self._outcomes()
        # Register before sending: an outcome can never arrive before its waiter exists.
        arrivals: queue.SimpleQueue[int] = queue.SimpleQueue()
        waiters = [
            (c, listener.register(AwaitedCommand(c.command_id, c.actor.id), index, arrivals))
            for index, c in enumerate(validated)
        ]
        results: dict[int, dict[str, Any]] = {}

        def send(index: int) -> None:
            # Sent as noted: an answer to a sender the worker did not prove counts only when
            # it names a message this client sent.
            message = self.wire_form(originals[index])
            waiters[index][1].awaited.sending(message)
            self.send(message)

        try:
            for index in range(len(originals)):
                send(index)
            start = time.monotonic()
            slice_ = budget / (resends + 1)
            attempts = 1
            while True:
                slice_end = start + slice_ * attempts
                # Outcomes are handled in the order they arrive.
                while len(results) < len(waiters):
                    try:
                        index = arrivals.get(timeout=max(0.0, slice_end - time.monotonic()))
                    except queue.Empty:
                        break
                    command, waiter = waiters[index]
                    if index in results or waiter.event is None:
                        continue
                    results[index] = waiter.event
                    if on_outcome is not None:
                        on_outcome(command, waiter.event)
                if len(results) == len(waiters) or attempts > resends:
                    break
                attempts += 1
                for index, (command, _) in enumerate(waiters):
                    if index not in results:
                        log.info("no outcome yet for %s; re-sending", command.command_id)
                        send(index)
        finally:
            for command, waiter in waiters:
                listener.unregister(command.command_id, waiter)
        missing = [c for i, (c, _) in enumerate(waiters) if i not in results]
        if missing and raise_on_timeout:
            raise OutcomeTimeout(missing[0].command_id, budget, attempts)
        return [results.get(i) for i in range(len(waiters))]

    async def send_and_wait_async(
        self,
        command: CommandLike,
        timeout: float | None = None,
        *,
        resend_attempts: int | None = None,
    ) -> dict[str, Any]:
        """:meth:`send_and_wait` for asyncio code (runs the blocking wait in a thread)."""
        return await asyncio.to_thread(
            self.send_and_wait, command, timeout, resend_attempts=resend_attempts
        )

    # ------------------------------------------------------------------ builders

    def build(
        self,
        type_: str,
        request_id: str,
        *,
        actor: ActorLike,
        expected_revision: int | None = None,
        args: Mapping[str, Any] | None = None,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        command_id: str | None = None,
        issued_at: datetime | None = None,
    ) -> Command:
        """Build and validate any command; raises ``InvalidCommand`` naming the field.

        ``command_id`` defaults to a fresh UUID: keep the returned command (or its id) to
        re-send it safely.
        """
        payload: dict[str, Any] = {
            "command_id": command_id or str(uuid.uuid4()),
            "type": type_,
            "request_id": request_id,
            "actor": actor_payload(actor),
        }
        if expected_revision is not None:
            payload["expected_revision"] = expected_revision
        if args:
            payload["args"] = dict(args)
        if reason is not None:
            payload["reason"] = reason
        if metadata:
            payload["metadata"] = dict(metadata)
        if issued_at is not None:
            payload["issued_at"] = _wire_timestamp(issued_at, "issued_at")
        return parse_command(payload)

    def submit(
        self,
        request_id: str,
        *,
        state_id: str,
        state_type: str,
        mutation_type: str,
        intent: Mapping[str, Any],
        actor: ActorLike,
        initial_status: str | None = None,
        pending_reason: str | None = None,
        approval_requirements: Iterable[Mapping[str, Any]] = (),
        expected_state_version: str | None = None,
        expires_at: datetime | None = None,
        request_metadata: Mapping[str, Any] | None = None,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        command_id: str | None = None,
    ) -> Command:
        """A ``submit`` command: a new request. ``intent`` needs at least ``operation_name``;
        ``approval_requirements`` are ``{"approver_id", "step_order"?, ...}`` dicts and imply
        pending for approval. ``request_metadata`` is stored on the request, ``metadata`` on
        the command."""
        args: dict[str, Any] = {
            "state_id": state_id,
            "state_type": state_type,
            "mutation_type": mutation_type,
            "intent": dict(intent),
        }
        requirements = [dict(r) for r in approval_requirements]
        if requirements:
            args["approval_requirements"] = requirements
        optional = {
            "initial_status": initial_status,
            "pending_reason": pending_reason,
            "expected_state_version": expected_state_version,
            "expires_at": _wire_timestamp(expires_at, "args.expires_at"),
            "metadata": dict(request_metadata) if request_metadata else None,
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        return self.build(
            "submit",
            request_id,
            actor=actor,
            args=args,
            reason=reason,
            metadata=metadata,
            command_id=command_id,
        )

    # The transitions of a request that exists differ only in their type and ``args``: one
    # table says which, one builder makes them all (``submit`` has a shape of its own).
    move_to_pending = TransitionBuilder(
        "move_to_pending",
        "(``pending_reason``: approval, external_check, ...; optional ``expires_at``)",
        required=("pending_reason",),
        optional=("expires_at",),
    )
    approve = TransitionBuilder("approve", "(created or pending -> approved)")
    reject = TransitionBuilder("reject", "(pending or approved -> rejected)")
    cancel = TransitionBuilder("cancel", "(any open request -> canceled)")
    expire = TransitionBuilder("expire", "(pending -> expired)")
    mark_executed = TransitionBuilder("mark_executed", "(approved -> executed)")
    supersede = TransitionBuilder(
        "supersede",
        "naming the request that replaces this one (``superseding_request_id``)",
        required=("superseding_request_id",),
    )
    approve_requirement = TransitionBuilder(
        "approve_requirement",
        "(``approval_id``): the named approver grants one requirement",
        required=("approval_id",),
    )
    reject_requirement = TransitionBuilder(
        "reject_requirement",
        "(``approval_id``): the named approver refuses one requirement",
        required=("approval_id",),
    )
    resolve_version = TransitionBuilder(
        "resolve_version",
        "(``current_state_version``; ``strategy``: reject_stale, require_renewed_approval or "
        "revalidate_on_latest_state)",
        required=("current_state_version", "strategy"),
    )
