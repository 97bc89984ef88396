"""The guarded transaction on a real PostgreSQL: idempotency of redeliveries, reuse of a
``command_id``, and infrastructure faults that must never turn into rejections."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.helpers import (
    Racer,
    applying,
    code_of,
    count,
    ledger_snapshot,
    pending,
    request_row,
    row_lock_held,
    wait_for_lock_waiters,
)
from tests.support.commands import command
from tests.support.signed import apply_command
from worker.errors import InfrastructureError

pytestmark = pytest.mark.integration


def test_redelivered_applied_command_returns_its_recorded_event_and_changes_nothing(
    db: psycopg.Connection[Any],
) -> None:
    # Given an approve that was applied
    request_id = pending(db)
    approve = command("approve", request_id, 1)
    first = apply_command(db, approve)
    before = ledger_snapshot(db, request_id)

    # When the same message is delivered again
    again = apply_command(db, dict(approve))

    # Then the answer is the recorded one (same event, same sequence) and nothing changed
    assert first.applied and not first.replayed
    assert again.replayed
    assert again.event == first.event
    assert (again.event["event_id"], again.sequence) == (first.event["event_id"], first.sequence)
    assert again.routing_key == "transition.applied.approve"
    assert ledger_snapshot(db, request_id) == before
    assert request_row(db, request_id).revision == 2


def test_redelivered_rejected_command_returns_the_same_rejection_and_changes_nothing(
    db: psycopg.Connection[Any],
) -> None:
    # Given a cancel that lost on a stale revision (the request moved on before it)
    request_id = pending(db)
    assert apply_command(db, command("approve", request_id, 1)).applied
    cancel = command("cancel", request_id, 1)
    first = apply_command(db, cancel)
    before = ledger_snapshot(db, request_id)

    # When the request moves on again and the cancel is redelivered
    assert apply_command(
        db, command("move_to_pending", request_id, 2, args={"pending_reason": "quota"})
    ).applied
    after_move = ledger_snapshot(db, request_id)
    again = apply_command(db, dict(cancel))

    # Then it gets the very same rejection (as recorded, not re-judged) and changes nothing
    assert code_of(first) == "concurrency_conflict"
    assert again.replayed
    assert again.event == first.event
    assert again.sequence == first.sequence
    assert again.event["rejection"]["current_revision"] == 2
    assert ledger_snapshot(db, request_id) == after_move
    assert after_move["ledger"] == before["ledger"] + 1


def test_reused_command_id_with_another_payload_is_a_duplicate_command(
    db: psycopg.Connection[Any],
) -> None:
    # Given an approve that was applied under some command_id
    request_id = pending(db)
    approve = command("approve", request_id, 1)
    original = apply_command(db, approve)
    before = ledger_snapshot(db, request_id)

    # When another command arrives under the same command_id
    impostor = command("cancel", request_id, 2, command_id=approve["command_id"])
    outcome = apply_command(db, impostor)

    # Then it is rejected as a duplicate, and the original record stands untouched
    assert code_of(outcome) == "duplicate_command"
    assert outcome.routing_key == "transition.rejected.duplicate_command"
    after = ledger_snapshot(db, request_id)
    assert after["row"] == before["row"]
    assert after["decisions"] == before["decisions"]
    assert after["ledger"] == before["ledger"]
    replay = apply_command(db, dict(approve))
    assert replay.replayed and replay.event == original.event


def test_a_lost_connection_raises_an_infrastructure_error_not_a_rejection(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given a connection whose server backend has been terminated
    request_id = pending(db)
    approve = command("approve", request_id, 1)
    with psycopg.connect(database_url, autocommit=True) as doomed:
        db.execute("SELECT pg_terminate_backend(%s)", (doomed.info.backend_pid,))

        # When a command is applied on it
        # Then it fails as infrastructure (to be retried), leaving no outcome behind
        with pytest.raises(InfrastructureError):
            apply_command(doomed, approve)
    assert (
        count(
            db,
            "SELECT count(*) FROM processed_commands WHERE command_id = %s",
            (approve["command_id"],),
        )
        == 0
    )

    # And rerunning it on a fresh connection applies it once
    with psycopg.connect(database_url, autocommit=True) as fresh:
        assert apply_command(fresh, approve).applied
    assert request_row(db, request_id).revision == 2
    assert (
        count(
            db,
            "SELECT count(*) FROM processed_commands WHERE command_id = %s",
            (approve["command_id"],),
        )
        == 1
    )


def test_a_connection_killed_while_waiting_for_the_row_lock_is_an_infrastructure_error(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given an approve blocked behind a row lock the test holds
    request_id = pending(db)
    approve = command("approve", request_id, 1)
    with row_lock_held(database_url, request_id):
        racer = Racer(database_url, applying(approve))
        racer.start()
        wait_for_lock_waiters(db, [racer.backend_pid])

        # When its backend is terminated mid-transaction
        db.execute("SELECT pg_terminate_backend(%s)", (racer.backend_pid,))

        # Then the command fails as infrastructure, not as a rejection
        with pytest.raises(InfrastructureError):
            racer.outcome()

    # And once rerun it is applied exactly once
    assert request_row(db, request_id).revision == 1
    with psycopg.connect(database_url, autocommit=True) as fresh:
        assert apply_command(fresh, approve).applied
        assert apply_command(fresh, approve).replayed
    assert request_row(db, request_id).revision == 2
    assert ledger_snapshot(db, request_id)["ledger"] == 2  # the submit and the approve
