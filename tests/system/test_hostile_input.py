"""Hostile input, published raw to a real worker: every message is answered with
``invalid_command`` naming the culprit field, or dead-lettered with a reason; the worker's
memory stays bounded and it keeps serving."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.topology import (
    APPLY_COMMAND_TASK,
    COMMANDS_QUEUE,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON_HEADER,
)
from producer.deadletters import DeadLetter, DeadLetterQueue
from tests.conftest import purge_queues
from tests.support.commands import submit
from tests.support.events import EventListener
from tests.support.processes import HANG_GUARD, WorkerProcess
from tests.system.harness import Sender, assert_history_clean, start_workers, stop_all, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(HANG_GUARD)]

COMMANDS_EXCHANGE = kombu.Exchange(COMMANDS_QUEUE, type="direct")
TWO_MB = 2 * 1024 * 1024
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


@dataclass
class Case:
    """One hostile message and what must become of it."""

    name: str
    #: The task's positional argument (a command-shaped value), or raw bytes to publish.
    body: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    task: str | None = APPLY_COMMAND_TASK
    args: list[Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: The field ``invalid_command`` must name; None: it must be dead-lettered.
    invalid_field: str | None = None
    token: str = field(default_factory=lambda: f"hostile-{uuid.uuid4().hex[:16]}")


def command_like(token: str, **fields: Any) -> dict[str, Any]:
    """A valid approve command, with ``fields`` overriding (``...`` removes a field)."""
    base: dict[str, Any] = {
        "command_id": token,
        "type": "approve",
        "request_id": "req-hostile",
        "expected_revision": 1,
        "actor": {"id": "mallory"},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"x": value}
    return value


def catalogue() -> list[Case]:
    """At least forty ways to be wrong."""
    invalid: list[tuple[str, dict[str, Any], str]] = [
        ("unknown type", {"type": "launch_missiles"}, "type"),
        ("missing type", {"type": ...}, "type"),
        ("type is a number", {"type": 42}, "type"),
        ("type is a list", {"type": ["approve"]}, "type"),
        ("SQL in request_id", {"request_id": "r'; DROP TABLE mutation_requests;--"}, "request_id"),
        ("shell in request_id", {"request_id": "$(rm -rf /)"}, "request_id"),
        ("backticks in request_id", {"request_id": "`reboot`"}, "request_id"),
        ("pipe and glob in request_id", {"request_id": "a|b*c&&d"}, "request_id"),
        ("request_id too long", {"request_id": "r" * 129}, "request_id"),
        ("empty request_id", {"request_id": ""}, "request_id"),
        ("null request_id", {"request_id": None}, "request_id"),
        ("numeric request_id", {"request_id": 5}, "request_id"),
        ("zero-width space in request_id", {"request_id": "req\u200b1"}, "request_id"),
        ("negative revision", {"expected_revision": -1}, "expected_revision"),
        ("enormous revision", {"expected_revision": 2**64}, "expected_revision"),
        ("revision as a string", {"expected_revision": "3"}, "expected_revision"),
        ("fractional revision", {"expected_revision": 1.5}, "expected_revision"),
        ("NaN revision", {"expected_revision": float("nan")}, "expected_revision"),
        ("infinite revision", {"expected_revision": float("inf")}, "expected_revision"),
        ("minus infinite revision", {"expected_revision": float("-inf")}, "expected_revision"),
        ("boolean revision", {"expected_revision": True}, "expected_revision"),
        ("missing revision", {"expected_revision": ...}, "expected_revision"),
        ("missing actor", {"actor": ...}, "actor"),
        ("actor as a string", {"actor": "alice"}, "actor"),
        ("empty actor id", {"actor": {"id": ""}}, "actor.id"),
        ("unknown actor type", {"actor": {"id": "a", "type": "god"}}, "actor.type"),
        ("2 MB reason", {"reason": "x" * TWO_MB}, "reason"),
        ("NaN reason", {"reason": float("nan")}, "reason"),
        ("NUL in reason", {"reason": "a\x00b"}, "reason"),
        ("lone surrogate in reason", {"reason": "a\ud800b"}, "reason"),
        ("lone surrogate in actor id", {"actor": {"id": "\udfff"}}, "actor.id"),
        ("lone surrogate in a metadata value", {"metadata": {"k": "\udbff"}}, "metadata.k"),
        ("lone surrogate in a metadata key", {"metadata": {"\ud800": 1}}, "metadata"),
        ("lone surrogate in a field name", {"\udc00x": 1}, "\\udc00x"),
        ("oversized metadata", {"metadata": {"blob": "y" * 100_000}}, "metadata"),
        ("deeply nested metadata", {"metadata": nested(200, 1)}, "metadata"),
        ("infinity in metadata", {"metadata": {"n": float("inf")}}, "metadata.n"),
        ("metadata as a list", {"metadata": [1, 2]}, "metadata"),
        ("unknown top-level field", {"evil": True}, "evil"),
        ("args for a type without args", {"args": {"x": 1}}, "args.x"),
        ("args as a string", {"args": "rm -rf"}, "args"),
        ("issued_at not a date", {"issued_at": "yesterday"}, "issued_at"),
        ("issued_at before year 1 in UTC", {"issued_at": "0001-01-01T00:00:00+14:00"}, "issued_at"),
        (
            "issued_at after year 9999 in UTC",
            {"issued_at": "9999-12-31T23:00:00-14:00"},
            "issued_at",
        ),
        (
            "expiry before year 1 in UTC",
            {
                "type": "move_to_pending",
                "args": {"pending_reason": "approval", "expires_at": "0001-01-01T00:00:00+14:00"},
            },
            "args.expires_at",
        ),
        (
            "expiry after year 9999 in UTC",
            {
                "type": "move_to_pending",
                "args": {"pending_reason": "approval", "expires_at": "9999-12-31T23:00:00-14:00"},
            },
            "args.expires_at",
        ),
        ("NUL in a nested metadata key", {"metadata": {"a": {"b\x00": 1}}}, "metadata.a"),
        ("NUL in a nested metadata value", {"metadata": {"a": ["x\x00y"]}}, "metadata.a[0]"),
        ("NUL in a field name", {"\x00x": 1}, "\\x00x"),
        (
            "NUL in a submit's intent metadata",
            {
                "type": "submit",
                "expected_revision": ...,
                "args": {
                    **submit("x")["args"],
                    "intent": {"operation_name": "x", "metadata": {"k": {"v": "\x00"}}},
                },
            },
            "args.intent.metadata.k.v",
        ),
        ("SQL in command_id, bad type", {"type": "drop"}, "type"),
        (
            "submit with a terminal initial status",
            {
                "type": "submit",
                "expected_revision": ...,
                "args": {**submit("x")["args"], "initial_status": "executed"},
            },
            "args.initial_status",
        ),
        (
            "submit with an intent of the wrong type",
            {
                "type": "submit",
                "expected_revision": ...,
                "args": {**submit("x")["args"], "intent": 7},
            },
            "args.intent",
        ),
        (
            "ten thousand approval requirements",
            {
                "type": "submit",
                "expected_revision": ...,
                "args": {
                    **submit("x")["args"],
                    "approval_requirements": [{"approver_id": f"a{i}"} for i in range(10_000)],
                },
            },
            "args.approval_requirements",
        ),
        (
            "unknown resolution strategy",
            {
                "type": "resolve_version",
                "args": {"current_state_version": "v2", "strategy": "yolo"},
            },
            "args.strategy",
        ),
    ]
    cases = []
    for name, fields, culprit in invalid:
        case = Case(name, invalid_field=culprit)
        token = case.token if name != "SQL in command_id, bad type" else case.token + "'--;"
        case.token = token
        case.body = command_like(token, **fields)
        cases.append(case)

    def dead(name: str, **kwargs: Any) -> Case:
        case = Case(name)
        for key, value in kwargs.items():
            if callable(value):
                value = value(case.token)
            setattr(case, key, value)
        return case

    cases += [
        dead("not JSON", raw=lambda t: b"}{" + t.encode()),
        dead("invalid UTF-8", raw=lambda t: b"\xff\xfe\xfa" + t.encode() + b"\xc3\x28"),
        dead(
            "pickle content type",
            raw=lambda t: b"\x80\x04" + t.encode(),
            content_type="application/x-python-serialize",
        ),
        dead("plain text content type", raw=lambda t: t.encode(), content_type="text/plain"),
        dead("2 MB of garbage", raw=lambda t: t.encode() + b"\x00\x01garbage" * (TWO_MB // 9)),
        dead(
            "100,000 levels of nesting",
            raw=lambda t: b"[" * 100_000 + json.dumps(t).encode() + b"]" * 100_000,
        ),
        dead("a bare number as the body", raw=lambda t: b"42 " + t.encode()),
        dead("not a task message", task=None, raw=lambda t: json.dumps([[t], {}, {}]).encode()),
        dead("unknown task", task="os.system", raw=lambda t: json.dumps([[t], {}, {}]).encode()),
        dead("no positional argument", args=[], kwargs={}),
        dead("two positional arguments", args=lambda t: [command_like(t), 2]),
        dead("keyword arguments", args=lambda t: [command_like(t)], kwargs={"force": True}),
        dead("a list instead of an object", args=lambda t: [[t]]),
        dead("a string instead of an object", args=lambda t: [t]),
        dead("an object without command_id", args=lambda t: [command_like(..., request_id=t)]),
        dead("a numeric command_id", args=lambda t: [command_like(7, request_id=t)]),
        dead("a command_id too long", args=lambda t: [command_like(t + "z" * 200)]),
        dead("a command_id with a newline", args=lambda t: [command_like(t + "\n")]),
    ]
    return cases


def publish(producer: kombu.Producer, case: Case) -> None:
    """Publish ``case`` exactly as given: a Celery protocol-2 message, or raw bytes."""
    task_id = case.token if case.invalid_field is None else str(uuid.uuid4())
    if case.raw is not None:
        body: bytes = case.raw
    else:
        args = case.args if case.args is not None else [case.body]
        body = json.dumps([args, case.kwargs, {}], allow_nan=True).encode()
    headers: dict[str, Any] = {}
    if case.task is not None:
        headers = {"lang": "py", "task": case.task, "id": task_id, "retries": 0}
        headers.update(root_id=task_id, parent_id=None, group=None, eta=None, expires=None)
    producer.publish(
        body,
        exchange=COMMANDS_EXCHANGE,
        routing_key=COMMANDS_QUEUE,
        content_type=case.content_type,
        content_encoding="utf-8"
        if case.content_type.startswith(("application/json", "text"))
        else "binary",
        headers=headers,
        correlation_id=task_id,
        delivery_mode=2,
    )


def names_field(message: str, culprit: str) -> bool:
    """Whether a rejection message names ``culprit`` (or a path inside it) first."""
    return message.startswith(culprit) and message[len(culprit) : len(culprit) + 1] in ":.["


def rss_bytes(worker: WorkerProcess) -> int:
    total = 0
    for pid in [worker.pid, *worker.child_pids()]:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@pytest.fixture(scope="module")
def workers(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    purge_queues(broker_url)
    started = start_workers(
        database_url,
        broker_url,
        Path(tmp_path_factory.mktemp("hostile")),
        app="worker",
        env={"GOVERNANCE_POISON_RETRY_LIMIT": "1"},
    )
    yield started
    stop_all(started)
    purge_queues(broker_url)


def dead_letter_of(letters: list[DeadLetter], token: str) -> DeadLetter | None:
    for letter in letters:
        if token.encode() in letter.body or token in str(letter.headers):
            return letter
    return None


def send_catalogue(broker_url: str, cases: list[Case]) -> None:
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        producer = kombu.Producer(conn.channel())
        for case in cases:
            publish(producer, case)


def await_catalogue(
    broker_url: str, events: EventListener, cases: list[Case]
) -> tuple[dict[str, dict[str, Any]], list[DeadLetter]]:
    answered = [c.token for c in cases if c.invalid_field is not None]
    try:
        outcomes = events.wait_for(answered, timeout=60)
    except TimeoutError:
        unanswered = [c.name for c in cases if c.invalid_field and not events.of(c.token)]
        raise AssertionError(f"no outcome for: {unanswered}") from None
    dead = [c for c in cases if c.invalid_field is None]

    def all_dead_lettered() -> list[DeadLetter] | None:
        letters = DeadLetterQueue(broker_url).list()
        if all(dead_letter_of(letters, c.token) for c in dead):
            return letters
        return None

    try:
        letters: list[DeadLetter] = wait_until(
            all_dead_lettered, 60, "every unanswerable message dead-lettered", interval=0.5
        )
    except TimeoutError:
        seen = DeadLetterQueue(broker_url).list()
        missing = [c.name for c in dead if dead_letter_of(seen, c.token) is None]
        raise AssertionError(f"not dead-lettered: {missing}") from None
    return outcomes, letters


def test_every_hostile_message_is_answered_invalid_naming_the_field_or_dead_lettered_with_a_reason(
    broker_url: str,
    database_url: str,
    events: EventListener,
    workers: list[WorkerProcess],
) -> None:
    # Given a catalogue of hostile messages
    cases = catalogue()
    assert len(cases) >= 40

    # When each is published raw to the command queue
    send_catalogue(broker_url, cases)
    outcomes, letters = await_catalogue(broker_url, events, cases)

    # Then the answerable ones are rejected as invalid_command, naming the culprit field
    wrong = []
    for case in cases:
        if case.invalid_field is None:
            letter = dead_letter_of(letters, case.token)
            assert letter is not None
            if not letter.headers.get(DEAD_LETTER_REASON_HEADER):
                wrong.append(f"{case.name}: dead-lettered without a reason")
            continue
        event = outcomes[case.token]
        rejection = event.get("rejection") or {}
        if rejection.get("code") != "invalid_command" or not names_field(
            str(rejection.get("message", "")), case.invalid_field
        ):
            wrong.append(f"{case.name}: {event.get('event_type')} {rejection}")
    assert wrong == []
    # And nothing was applied, nothing is left in the queue or unpublished
    sender = Sender(broker_url)
    sender.sent = [c.body for c in cases if c.invalid_field is not None]
    assert_history_clean(sender, events, database_url, broker_url)
    sender.close()


def test_the_worker_memory_stays_bounded_under_hostile_input_and_it_keeps_serving(
    broker_url: str,
    events: EventListener,
    workers: list[WorkerProcess],
) -> None:
    # Given workers that have already seen the catalogue once (warm)
    warm = catalogue()
    send_catalogue(broker_url, warm)
    await_catalogue(broker_url, events, warm)
    before = sum(rss_bytes(w) for w in workers)
    for _ in range(3):
        # When the catalogue (2 MB bodies included) is sent three more times
        cases = catalogue()
        send_catalogue(broker_url, cases)
        await_catalogue(broker_url, events, cases)
    after = sum(rss_bytes(w) for w in workers)

    # Then the workers' resident memory grew by less than the bound
    assert after - before < RSS_GROWTH_LIMIT, (before, after)
    # And they still apply a valid command
    sender = Sender(broker_url)
    payload = submit(f"req-{uuid.uuid4().hex[:12]}")
    sender.send([payload])
    assert events.wait_for([payload["command_id"]], 30)[payload["command_id"]]["event_type"] == (
        "transition.applied"
    )
    sender.close()
    purge_queues(broker_url, (DEAD_LETTER_QUEUE,))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    # Lone surrogates: valid as JSON escapes, never as UTF-8.
    | st.text(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
        min_size=1,
        max_size=3,
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["submit", "approve", "cancel", "expire", "resolve_version", "bogus"]),
    st.integers(min_value=-3, max_value=5),
    st.fixed_dictionaries({"id": st.text(max_size=20)}),
)
command_shapes = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "request_id",
            "expected_revision",
            "actor",
            "reason",
            "metadata",
            "args",
            "issued_at",
            "surprise",
        ]
    ),
    field_values,
    max_size=9,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shape=command_shapes)
def test_random_command_shapes_each_get_exactly_one_known_outcome(
    broker_url: str,
    events: EventListener,
    workers: list[WorkerProcess],
    shape: dict[str, Any],
) -> None:
    # Given a random command shape with a fresh command_id
    command_id = f"fuzz-{uuid.uuid4().hex}"
    case = Case("fuzz", body={"command_id": command_id, **shape})
    case.invalid_field = "?"

    # When it is published to a real worker
    send_catalogue(broker_url, [case])
    outcome = events.wait_for([command_id], timeout=30)[command_id]

    # Then it gets an outcome event with a known shape
    assert outcome["event_type"] in ("transition.applied", "transition.rejected")
    if outcome["event_type"] == "transition.rejected":
        assert outcome["rejection"]["code"] in {
            "invalid_command",
            "not_found",
            "concurrency_conflict",
            "invalid_transition",
            "already_exists",
            "approval_not_allowed",
        }
