"""Signed-command attacks, sent raw to a real worker in its default (signed) mode: each forged
or replayed-elsewhere command is answered ``unauthenticated`` with nothing applied and
nothing recorded, and the genuine command still applies afterwards; a malformed ``auth`` that
validation catches is ``invalid_command``."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from governance.proof import b64url_encode, signed_bytes
from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE
from producer.signing import sign_command
from tests.integration.helpers import PATIENCE, Sender, count, send_and_wait
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import key_for, register, sign
from tests.support.processes import WorkerProcess
from worker import registry

pytestmark = [pytest.mark.integration, pytest.mark.system]

#: The run's database (set by the autouse fixture below), for attacks that register actors.
DATABASE_URL: list[str] = []


@pytest.fixture(autouse=True)
def _database_url(database_url: str) -> None:
    DATABASE_URL[:] = [database_url]


def send_raw(sender: Sender, events: EventListener, payload: dict[str, Any]) -> dict[str, Any]:
    """Publish ``payload`` exactly as given (no signing on the way) and return its outcome."""
    sender.client.send_task(APPLY_COMMAND_TASK, args=[payload], queue=COMMANDS_QUEUE)
    return events.wait_for([payload["command_id"]], timeout=PATIENCE)[payload["command_id"]]


def recorded(db: psycopg.Connection[Any], command_id: str) -> int:
    return count(db, "SELECT count(*) FROM processed_commands WHERE command_id = %s", (command_id,))


def revision_of(db: psycopg.Connection[Any], request_id: str) -> int:
    row = db.execute(
        "SELECT revision FROM mutation_requests WHERE request_id = %s", (request_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def signature_of_another_command(
    genuine: dict[str, Any], db: psycopg.Connection[Any]
) -> dict[str, Any]:
    other = sign(command("approve", new_id(), 1, actor=genuine["actor"]["id"]))
    forged = sign(genuine)
    forged["auth"] = other["auth"]
    return forged


def signature_over_a_non_canonical_serialisation(
    genuine: dict[str, Any], db: psycopg.Connection[Any]
) -> dict[str, Any]:
    forged = sign(genuine)
    unsigned = {k: v for k, v in forged.items() if k != "auth"}
    spelled = json.dumps(unsigned, indent=2).encode()  # not RFC 8785
    key = key_for(genuine["actor"]["id"])
    forged["auth"] = {"key_id": key.key_id, "signature": b64url_encode(key.sign(spelled))}
    return forged


def key_of_another_actor(genuine: dict[str, Any], db: psycopg.Connection[Any]) -> dict[str, Any]:
    mallory = key_for("mallory")
    register(DATABASE_URL[0], "mallory")
    forged = sign(genuine)
    unsigned = {k: v for k, v in forged.items() if k != "auth"}
    forged["auth"] = {
        "key_id": mallory.key_id,
        "signature": b64url_encode(mallory.sign(signed_bytes(unsigned))),
    }
    return forged


def revoked_key(genuine: dict[str, Any], db: psycopg.Connection[Any]) -> dict[str, Any]:
    # An actor whose only key was revoked signs with it anyway
    actor = new_id("revoked")
    register(DATABASE_URL[0], actor)
    registry.revoke_key(db, key_for(actor).key_id)
    return sign({**genuine, "actor": {"id": actor}})


def wrong_audience(genuine: dict[str, Any], db: psycopg.Connection[Any]) -> dict[str, Any]:
    return sign_command(genuine, key_for(genuine["actor"]["id"]), audience="staging")


def past_the_maximum_age(genuine: dict[str, Any], db: psycopg.Connection[Any]) -> dict[str, Any]:
    return sign(genuine, issued_at=datetime.now(UTC) - timedelta(hours=25))


def unsigned(genuine: dict[str, Any], db: psycopg.Connection[Any]) -> dict[str, Any]:
    return copy.deepcopy(genuine)


ATTACKS: dict[str, Callable[[dict[str, Any], psycopg.Connection[Any]], dict[str, Any]]] = {
    "signature of another command": signature_of_another_command,
    "signature over a non-canonical serialisation": signature_over_a_non_canonical_serialisation,
    "key id of another actor": key_of_another_actor,
    "key id of a revoked key": revoked_key,
    "wrong audience": wrong_audience,
    "issued_at past the maximum age": past_the_maximum_age,
    "unsigned, reusing the command_id of the genuine command sent later": unsigned,
}

#: What the unauthenticated message must name, per attack.
NAMED = {
    "signature of another command": "does not verify",
    "signature over a non-canonical serialisation": "does not verify",
    "key id of another actor": "belongs to mallory",
    "key id of a revoked key": "revoked",
    "wrong audience": "wrong audience",
    "issued_at past the maximum age": "expired",
    "unsigned, reusing the command_id of the genuine command sent later": "signed command",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_forged_or_misdirected_command_is_unauthenticated_and_the_genuine_one_still_applies(
    attack: str,
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    # Given a request, and the approval its operator means to send
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    genuine = command("approve", request_id, 1, actor="alice")
    # When an attacker sends a forged or misdirected version of it first, with its command_id
    forged = ATTACKS[attack](genuine, db)
    outcome = send_raw(sender, events, forged)
    # Then it is answered unauthenticated, naming what failed, and nothing changed or recorded
    assert outcome["rejection"]["code"] == "unauthenticated", outcome
    assert NAMED[attack] in outcome["rejection"]["message"]
    assert outcome["authenticated"] is False
    assert revision_of(db, request_id) == 1
    assert recorded(db, genuine["command_id"]) == 0
    # And the genuine command, sent afterwards with the same command_id, is applied
    events.events.clear()
    applied = send_raw(sender, events, sign(genuine))
    assert applied["event_type"] == "transition.applied", applied
    assert applied["authenticated"] is True
    assert revision_of(db, request_id) == 2


@pytest.mark.parametrize(
    ("name", "auth", "field"),
    [
        ("an auth of a megabyte", {"key_id": "k", "signature": "A" * 1_000_000}, "auth.signature"),
        ("a NUL in the key id", {"key_id": "key\x00id", "signature": "AAAA"}, "auth.key_id"),
        ("auth of the wrong type", "signed-by-me", "auth"),
        ("a key id of the wrong type", {"key_id": 5, "signature": "AAAA"}, "auth.key_id"),
    ],
)
def test_a_malformed_auth_that_validation_catches_is_an_invalid_command(
    name: str,
    auth: Any,
    field: str,
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    payload = {**sign(command("approve", request_id, 1, actor="alice")), "auth": auth}
    outcome = send_raw(sender, events, payload)
    assert outcome["rejection"]["code"] == "invalid_command", outcome
    assert outcome["rejection"]["message"].startswith(field)
    assert outcome["authenticated"] is False
    assert revision_of(db, request_id) == 1
    assert recorded(db, payload["command_id"]) == 0


def test_the_actor_named_in_events_is_the_registry_s_not_the_message_s(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    # Given alice registered as "Alice", a user
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    # When her signed approval claims another name and type
    claimed = {"id": "alice", "name": "The Administrator", "type": "administrator"}
    approval = {**command("approve", request_id, 1, actor="alice"), "actor": claimed}
    outcome = send_raw(sender, events, sign(approval))
    # Then the event and the decision name her as the registry does
    assert outcome["event_type"] == "transition.applied", outcome
    assert outcome["actor"] == {"id": "alice", "name": "Alice", "type": "user"}
    assert outcome["decisions"][0]["actor"]["name"] == "Alice"


@pytest.mark.parametrize(
    ("auth", "named"),
    [
        ({"key_id": "test-alice"}, "auth.signature: missing"),
        ({"signature": "AAAA"}, "auth.key_id: missing"),
        ({"key_id": "test-alice", "signature": "not*base64url"}, "not base64url"),
        ({"key_id": "test-alice", "signature": "AAAA"}, "expected 64 bytes"),
    ],
)
def test_a_well_formed_auth_that_cannot_verify_is_unauthenticated_naming_what_is_wrong(
    auth: dict[str, Any],
    named: str,
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
) -> None:
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    payload = {**sign(command("approve", request_id, 1, actor="alice")), "auth": auth}
    outcome = send_raw(sender, events, payload)
    assert outcome["rejection"]["code"] == "unauthenticated", outcome
    assert named in outcome["rejection"]["message"]
    assert revision_of(db, request_id) == 1
    assert recorded(db, payload["command_id"]) == 0


def test_a_rejection_names_the_registry_s_actor_too(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
) -> None:
    # Given a request at revision 1, and alice's signed but stale approval claiming a title
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    claimed = {"id": "alice", "name": "The Administrator", "type": "administrator"}
    stale = {**command("approve", request_id, 7, actor="alice"), "actor": claimed}
    outcome = send_raw(sender, events, sign(stale))
    # Then the rejection names her as the registry does
    assert outcome["rejection"]["code"] == "concurrency_conflict", outcome
    assert outcome["actor"] == {"id": "alice", "name": "Alice", "type": "user"}
