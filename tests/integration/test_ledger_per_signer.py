"""The ledger belongs to its signer, through a real worker in its default (signed) mode: a
``command_id`` is unique per proved actor, only a command whose signature verified claims an
entry (or a slot of its batch), and a signed command refused for a reason that may change is
recorded, so sending it again later is answered the same."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from governance.authentication import MAX_CLOCK_SKEW
from tests.integration.helpers import (
    Sender,
    answers,
    database_now,
    send_and_wait,
    send_raw,
    wait_until,
)
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import register, sign
from tests.support.processes import WorkerProcess
from worker import registry, transaction

pytestmark = [pytest.mark.integration, pytest.mark.system]


def revision_of(db: psycopg.Connection[Any], request_id: str) -> int | None:
    row = db.execute(
        "SELECT revision FROM mutation_requests WHERE request_id = %s", (request_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def pending_request(sender: Sender, events: EventListener) -> str:
    request_id = new_id()
    outcome = send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    assert outcome["event_type"] == "transition.applied", outcome
    return request_id


# --------------------------------------------------------------------------- one per signer


def test_a_command_id_another_actor_signed_first_does_not_shadow_the_genuine_command(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    # Given a pending request, and the command_id its approver will use
    request_id = pending_request(sender, events)
    command_id = f"approve-{request_id}-1"
    # When another registered actor signs a command of its own with that command_id first
    register(database_url, "mallory")
    squatter = sign(command("approve", new_id(), 1, actor="mallory", command_id=command_id))
    send_raw(sender, squatter)
    (occupied,) = answers(events, command_id, "mallory")
    assert occupied["authenticated"] is True
    # Then the approver's genuine command with the same command_id is still applied
    send_raw(sender, sign(command("approve", request_id, 1, actor="alice", command_id=command_id)))
    (genuine,) = answers(events, command_id, "alice")
    assert genuine["event_type"] == "transition.applied", genuine
    assert revision_of(db, request_id) == 2
    # And each actor's entry is its own
    entries = db.execute(
        "SELECT namespace FROM processed_commands WHERE command_id = %s ORDER BY namespace",
        (command_id,),
    ).fetchall()
    assert [row[0] for row in entries] == ["alice", "mallory"]


def test_an_unsigned_copy_ahead_of_the_genuine_command_in_one_run_does_not_take_its_slot(
    db: psycopg.Connection[Any],
) -> None:
    # Given a pending request, an approval signed by its approver and an unsigned copy of it
    request_id = new_id()
    transaction.apply_command(db, sign(submit(request_id, initial_status="pending")))
    genuine = sign(command("approve", request_id, 1, actor="alice"))
    copy_ = {k: v for k, v in copy.deepcopy(genuine).items() if k != "auth"}
    # When both come in one batch, the copy first
    forged, applied = transaction.apply_commands(db, [copy_, genuine])
    # Then the copy is refused unauthenticated, and the genuine command is applied
    assert isinstance(forged, transaction.StoredOutcome)
    assert isinstance(applied, transaction.StoredOutcome)
    assert forged.event["rejection"]["code"] == "unauthenticated", forged.event
    assert applied.event["event_type"] == "transition.applied", applied.event
    assert not applied.replayed
    assert revision_of(db, request_id) == 2


# --------------------------------------------------------------------------- recorded refusals


def ahead_of_the_clock(
    database_url: str, db: psycopg.Connection[Any], request_id: str
) -> tuple[dict[str, Any], Callable[[], None]]:
    # Far enough ahead that the refusal comes before the clock catches up, however busy
    issued_at = database_now(db) + MAX_CLOCK_SKEW + timedelta(seconds=10)
    payload = sign(command("approve", request_id, 1, actor="alice"), issued_at=issued_at)

    def clock_catches_up() -> None:
        wait_until(lambda: database_now(db) > issued_at - MAX_CLOCK_SKEW, "the clock to catch up")

    return payload, clock_catches_up


def deactivated_actor(
    database_url: str, db: psycopg.Connection[Any], request_id: str
) -> tuple[dict[str, Any], Callable[[], None]]:
    actor = new_id("dora")
    register(database_url, actor)
    registry.set_active(db, actor, False)
    payload = sign(command("approve", request_id, 1, actor=actor))

    def reactivated() -> None:
        registry.set_active(db, actor, True)

    return payload, reactivated


def missing_request(
    database_url: str, db: psycopg.Connection[Any], request_id: str
) -> tuple[dict[str, Any], Callable[[], None]]:
    absent = new_id()
    payload = sign(command("approve", absent, 1, actor="alice"))

    def request_exists() -> None:
        transaction.apply_command(db, sign(submit(absent, initial_status="pending")))

    return payload, request_exists


def actor_without_the_role(
    database_url: str, db: psycopg.Connection[Any], request_id: str
) -> tuple[dict[str, Any], Callable[[], None]]:
    actor = new_id("rita")
    register(database_url, actor, roles=("requester",))
    payload = sign(command("approve", request_id, 1, actor=actor))

    def made_approver() -> None:
        registry.add_role(db, actor, "approver")

    return payload, made_approver


REFUSALS: dict[
    str,
    Callable[[str, psycopg.Connection[Any], str], tuple[dict[str, Any], Callable[[], None]]],
] = {
    "issued_at ahead of the clock": ahead_of_the_clock,
    "a deactivated actor": deactivated_actor,
    "not_found": missing_request,
    "forbidden": actor_without_the_role,
}
CODES = {
    "issued_at ahead of the clock": "unauthenticated",
    "a deactivated actor": "unauthenticated",
    "not_found": "not_found",
    "forbidden": "forbidden",
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_a_signed_command_refused_for_a_reason_that_may_change_is_answered_the_same_later(
    reason: str,
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    # Given a validly signed command refused for a reason that may change
    request_id = pending_request(sender, events)
    payload, change = REFUSALS[reason](database_url, db, request_id)
    actor = payload["actor"]["id"]
    send_raw(sender, payload)
    (first,) = answers(events, payload["command_id"], actor)
    assert first["rejection"]["code"] == CODES[reason], first
    assert first["authenticated"] is True
    # When the reason goes away and the very same command is sent again
    change()
    send_raw(sender, copy.deepcopy(payload))
    # Then it is answered with its recorded refusal: same event, same sequence, nothing applied
    _, again = answers(events, payload["command_id"], actor, at_least=2)
    assert (again["event_id"], again["sequence"]) == (first["event_id"], first["sequence"])
    assert revision_of(db, payload["request_id"]) == 1
