"""Parsing is unambiguous, through a real worker: a command that names a key twice in any
object is refused ``invalid_command`` (never applied as whichever value came last), and a
task body is plain JSON on every path — the batch step, the per-task path and the retry
queue read the same command the same way (no serializer's object hooks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import kombu
import psycopg
import pytest

from governance.task_message import encode_task_message
from governance.topology import COMMANDS_QUEUE, DEAD_LETTER_QUEUE, RETRY_QUEUE
from producer._amqp import worker_queue
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.processes import WorkerProcess
from tests.support.services import spare_vhost

PATIENCE = 60.0

#: Metadata that kombu's JSON decoder reads as something else than the object it is: bytes,
#: and a type it does not know (which it refuses to decode at all).
KOMBU_SHAPED = {
    "blob": {"__type__": "bytes", "__value__": "x"},
    "odd": {"__type__": "nope", "__value__": 1},
}


@pytest.fixture(scope="module", params=["batch", "task"])
def worker_url(
    request: pytest.FixtureRequest,
    database_url: str,
    broker_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The broker URL of a worker of its own (a virtual host of its own), in batch mode (the
    default) or applying each command as its own task (``GOVERNANCE_BATCH_SIZE=1``)."""
    env = {"GOVERNANCE_BATCH_SIZE": "1"} if request.param == "task" else {}
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    with spare_vhost(broker_url) as url:
        worker = WorkerProcess(database_url, url, concurrency=1, log_path=log_path, extra_env=env)
        try:
            worker.wait_ready()
            yield url
        finally:
            worker.stop()


@pytest.fixture
def events(worker_url: str) -> Iterator[EventListener]:
    with closing(EventListener(worker_url)) as listener:
        yield listener


def shaped_submit() -> dict[str, Any]:
    """A submit whose request metadata holds :data:`KOMBU_SHAPED`."""
    payload = submit(new_id())
    payload["args"]["metadata"] = KOMBU_SHAPED
    return payload


def publish(broker_url: str, body: str, queue_name: str = COMMANDS_QUEUE) -> None:
    """Publish a task message with this exact body, as a Celery client would."""
    message = encode_task_message({"command_id": "placeholder"})
    queue = worker_queue(queue_name)
    with kombu.Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        kombu.Producer(conn.channel()).publish(
            body.encode("utf-8"),
            exchange=queue.exchange,
            routing_key=queue_name,
            headers=message.headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=2,
            declare=[queue],
        )


def body_of(payload: dict[str, Any]) -> str:
    return encode_task_message(payload).body


def apply(url: str, events: EventListener, payload: dict[str, Any]) -> dict[str, Any]:
    publish(url, body_of(payload))
    return events.wait_for([payload["command_id"]], PATIENCE)[payload["command_id"]]


def row(database_url: str, request_id: str) -> tuple[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT status, revision FROM mutation_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
    assert found is not None
    return str(found[0]), int(found[1])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.1)


def dead_letters(url: str) -> int:
    with kombu.Connection(url) as conn:
        return int(conn.channel().queue_declare(DEAD_LETTER_QUEUE, passive=True)[1])


def test_a_key_given_twice_is_refused_invalid_command_and_neither_request_changes(
    worker_url: str, events: EventListener, database_url: str
) -> None:
    # Given two pending requests
    first, second = new_id(), new_id()
    for request_id in (first, second):
        submitted = apply(worker_url, events, sign(submit(request_id, initial_status="pending")))
        assert submitted["event_type"] == "transition.applied", submitted
    # When an approval names the first, then the second, as its request_id
    approval = sign(command("approve", first, 1))
    body = body_of(approval).replace(
        f'"request_id": "{first}"', f'"request_id": "{first}", "request_id": "{second}"', 1
    )
    assert body.count('"request_id"') == 2
    publish(worker_url, body)
    outcome = events.wait_for([approval["command_id"]], PATIENCE)[approval["command_id"]]
    # Then it is refused naming the key, and both requests stay pending at revision 1
    assert outcome["event_type"] == "transition.rejected"
    assert outcome["rejection"]["code"] == "invalid_command"
    assert "request_id" in outcome["rejection"]["message"]
    assert row(database_url, first) == row(database_url, second) == ("pending", 1)


def test_a_key_given_twice_deep_in_the_metadata_is_refused_naming_its_path(
    worker_url: str, events: EventListener
) -> None:
    payload = sign({**submit(new_id()), "metadata": {"ticket": {"id": "A"}}})
    body = body_of(payload).replace('{"id": "A"}', '{"id": "A", "id": "B"}', 1)
    publish(worker_url, body)

    outcome = events.wait_for([payload["command_id"]], PATIENCE)[payload["command_id"]]

    assert outcome["rejection"]["code"] == "invalid_command"
    assert outcome["rejection"]["message"].startswith("metadata.ticket.id:")


def test_metadata_shaped_like_a_serializer_type_is_plain_data_on_the_command_queue(
    worker_url: str, events: EventListener
) -> None:
    payload = sign(shaped_submit())

    outcome = apply(worker_url, events, payload)

    assert outcome["event_type"] == "transition.applied", outcome
    assert outcome["request"]["metadata"] == KOMBU_SHAPED


def test_metadata_shaped_like_a_serializer_type_is_plain_data_on_the_retry_queue(
    worker_url: str, events: EventListener
) -> None:
    # Given the same command as on the command queue, on the retry queue (where a command
    # that failed in a batch goes, and the pool's task path reads it)
    payload = sign(shaped_submit())
    parked = dead_letters(worker_url)
    publish(worker_url, body_of(payload), RETRY_QUEUE)
    # Then it is applied with its metadata as sent, and nothing was dead-lettered
    outcome = events.wait_for([payload["command_id"]], PATIENCE)[payload["command_id"]]
    assert outcome["event_type"] == "transition.applied", outcome
    assert outcome["request"]["metadata"] == KOMBU_SHAPED
    assert dead_letters(worker_url) == parked


def test_a_command_id_given_twice_is_dead_lettered_not_answered_as_either(
    worker_url: str, events: EventListener
) -> None:
    # Given a command naming two command ids (answering either would leave the sender of the
    # other waiting for ever)
    payload = sign(submit(new_id()))
    other = new_id("cmd")
    body = body_of(payload).replace(
        f'"command_id": "{payload["command_id"]}"',
        f'"command_id": "{payload["command_id"]}", "command_id": "{other}"',
        1,
    )
    parked = dead_letters(worker_url)
    # When it is sent
    publish(worker_url, body)
    # Then it is dead-lettered, and no outcome names either id
    wait_until(lambda: dead_letters(worker_url) == parked + 1, "the dead letter")
    after = sign(submit(new_id()))
    apply(worker_url, events, after)
    assert events.of(payload["command_id"]) == events.of(other) == []
