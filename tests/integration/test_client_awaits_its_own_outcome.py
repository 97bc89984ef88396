"""A client awaits the outcome of *its* command, through a real worker: by ``command_id`` and
actor, and only an authenticated answer or one naming a message it sent. Another actor's
command with the same ``command_id`` and an unsigned copy claiming its actor answer nobody;
its own command refused ``unauthenticated`` still answers it."""

from __future__ import annotations

import queue
from typing import Any

import psycopg
import pytest

from producer import GovernanceClient
from producer.client import OutcomeListener
from producer.outcomes import AwaitedCommand
from tests.integration.helpers import PATIENCE, Sender, answers, send_and_wait, send_raw
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import Keyring, key_for, register, sign, trusted_worker_keys
from tests.support.processes import WorkerProcess
from worker import registry

pytestmark = [pytest.mark.integration, pytest.mark.system]


def test_neither_another_actor_s_command_nor_an_unsigned_copy_answers_the_waiting_one(
    running_worker: WorkerProcess,
    broker_url: str,
    sender: Sender,
    events: EventListener,
    database_url: str,
) -> None:
    # Given a pending request and alice's approval of it, awaited by its command_id and actor
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    genuine = sign(command("approve", request_id, 1, actor="alice"))
    command_id = genuine["command_id"]
    register(database_url, "mallory")
    listener = OutcomeListener(broker_url, trusted_worker_keys())
    listener.start()
    try:
        arrivals: queue.SimpleQueue[int] = queue.SimpleQueue()
        awaited = AwaitedCommand(command_id, "alice")
        waiter = listener.register(awaited, 0, arrivals)
        # When another actor's command with that command_id is answered first
        send_raw(
            sender, sign(command("approve", new_id(), 1, actor="mallory", command_id=command_id))
        )
        answers(events, command_id, "mallory")
        # And an unsigned copy claiming alice, refused unauthenticated
        send_raw(sender, {k: v for k, v in genuine.items() if k != "auth"})
        answers(events, command_id, "alice")
        # And then alice's own command, sent as noted
        awaited.sending(genuine)
        send_raw(sender, genuine)
        # Then the waiter's outcome is alice's applied approval, and nothing before it
        assert arrivals.get(timeout=PATIENCE) == 0
        assert waiter.event is not None
        assert waiter.event["event_type"] == "transition.applied", waiter.event
        assert waiter.event["actor"]["id"] == "alice"
        assert arrivals.empty()
    finally:
        listener.close()


def test_a_command_refused_unauthenticated_still_answers_its_sender(
    running_worker: WorkerProcess,
    broker_url: str,
    sender: Sender,
    events: EventListener,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    # Given an approver whose key was revoked, and a client that still signs with it
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    approver = new_id("approver")
    register(database_url, approver)
    registry.revoke_key(db, key_for(approver).key_id)
    with GovernanceClient(broker_url, database_url, timeout=30, signing_key=Keyring()) as client:
        approval = client.approve(request_id, expected_revision=1, actor=approver)
        # When it sends an approval and awaits its outcome
        outcome = client.send_and_wait(approval)
    # Then its answer is the refusal of that very message
    assert outcome["rejection"]["code"] == "unauthenticated", outcome
    assert outcome["authenticated"] is False
    assert len(outcome["command_sha256"]) == 64
