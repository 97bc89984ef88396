"""Revocation is immediate, through a real worker: once revoking a key returns, no command
signed with it is applied, not even one that was already in its guarded transaction when
the key was revoked (a registry change waits for the guarded transactions in flight)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import (
    PATIENCE,
    Sender,
    answers,
    count,
    request_row,
    send_and_wait,
    send_raw,
    wait_until,
)
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import key_for, register, sign
from tests.support.processes import WorkerProcess
from worker import registry

pytestmark = [pytest.mark.integration, pytest.mark.system]


def waiting_on_the_outbox(observer: psycopg.Connection[Any]) -> bool:
    return (
        count(
            observer,
            "SELECT count(*) FROM pg_locks "
            "WHERE relation = 'outbox_events'::regclass AND NOT granted",
        )
        > 0
    )


def waiting_on_an_advisory_lock(observer: psycopg.Connection[Any], pid: int) -> bool:
    return (
        count(
            observer,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND pid = %s",
            (pid,),
        )
        > 0
    )


def test_an_approval_in_flight_is_never_applied_after_its_key_s_revocation_returned(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    # Given a pending request, and an approval signed (before any lock is held) by an approver
    request_id = new_id()
    send_and_wait(sender, events, submit(request_id, initial_status="pending"))
    approver = new_id("approver")
    register(database_url, approver)
    approval = sign(command("approve", request_id, 1, actor=approver))
    revoker = psycopg.connect(database_url, autocommit=True)
    seen_after_revocation: list[int] = []

    def revoke() -> None:
        registry.revoke_key(revoker, key_for(approver).key_id)
        # What the registry's operator sees the moment the revocation has returned
        seen_after_revocation.append(request_row(revoker, request_id).revision)

    revoking = threading.Thread(target=revoke, daemon=True)
    try:
        # When the worker's transaction for the approval waits on the outbox (its lock held)
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE outbox_events IN EXCLUSIVE MODE")
            send_raw(sender, approval)
            wait_until(lambda: waiting_on_the_outbox(db), "the approval to wait on the outbox")
            # And the approver's key is revoked meanwhile
            revoking.start()
            wait_until(
                lambda: waiting_on_an_advisory_lock(db, revoker.info.backend_pid),
                "the revocation to wait for the transaction in flight",
            )
            holder.commit()
        revoking.join(PATIENCE)
        assert not revoking.is_alive(), "the revocation did not return"
    finally:
        revoker.close()
    # Then whatever the approval's outcome, nothing was applied after the revocation returned
    (outcome,) = answers(events, approval["command_id"], approver)
    assert seen_after_revocation == [request_row(db, request_id).revision], outcome
    # And a command signed with the revoked key from now on is refused
    later = sign(
        command("cancel", request_id, request_row(db, request_id).revision, actor=approver)
    )
    send_raw(sender, later)
    (refused,) = answers(events, later["command_id"], approver)
    assert refused["rejection"]["code"] == "unauthenticated", refused
    assert "revoked" in refused["rejection"]["message"]
