"""The ledger keeps each entry for as long as it must: a signed command's at least until it is
too old to be accepted, whatever the window, and the database refuses to forget one sooner;
retention forgets only what is past its keep period."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import migrated_database
from tests.integration.helpers import Sender, answers, database_now, send_raw, wait_until
from tests.integration.test_ledger_per_signer import revision_of
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign
from tests.support.processes import WorkerProcess
from worker import transaction
from worker.retention import RetentionPolicy, apply_retention

pytestmark = [pytest.mark.integration]


@pytest.fixture
def short_window(postgres_server_url: str, broker_url: str, tmp_path: Path) -> Iterator[str]:
    """A database and a worker with the shortest ledger window the settings allow for a
    half-second maximum command age."""
    with migrated_database(postgres_server_url) as url:
        worker = WorkerProcess(
            url,
            broker_url,
            concurrency=1,
            log_path=tmp_path / "worker.log",
            extra_env={
                "GOVERNANCE_LEDGER_WINDOW_DAYS": "0.00001",
                "GOVERNANCE_MAX_COMMAND_AGE": "0.5",
            },
        )
        try:
            worker.wait_ready()
            yield url
        finally:
            worker.stop()


SHORT = RetentionPolicy(
    ledger_window=timedelta(days=0.00001), log_retention=timedelta(days=0.00001)
)


def test_a_signed_refusal_is_kept_until_its_command_is_too_old_to_be_accepted(
    short_window: str, sender: Sender, events: EventListener
) -> None:
    with psycopg.connect(short_window, autocommit=True) as db:
        # Given a signed approval issued four minutes ahead (within the clock skew) of a
        # request that does not exist yet: refused not_found
        request_id = new_id()
        ahead = database_now(db) + timedelta(minutes=4)
        approval = sign(command("approve", request_id, 1, actor="alice"), issued_at=ahead)
        send_raw(sender, approval)
        (first,) = answers(events, approval["command_id"], "alice")
        assert first["rejection"]["code"] == "not_found", first
        # When the request is submitted, the ledger window passes and retention runs
        send_raw(sender, sign(submit(request_id, initial_status="pending"), issued_at=ahead))
        wait_until(lambda: revision_of(db, request_id) == 1, "the submit")
        recorded = db.execute(
            "SELECT processed_at FROM processed_commands WHERE command_id = %s",
            (approval["command_id"],),
        ).fetchone()
        assert recorded is not None
        wait_until(lambda: database_now(db) > recorded[0] + timedelta(days=0.00001), "the window")
        apply_retention(db, SHORT)
        # Then the approval, sent again, is still answered with its refusal, not applied
        send_raw(sender, copy.deepcopy(approval))
        _, again = answers(events, approval["command_id"], "alice", at_least=2)
        assert again["event_id"] == first["event_id"], again
        assert revision_of(db, request_id) == 1


def test_an_approval_answered_in_time_is_still_applied_under_the_shortest_window(
    short_window: str, sender: Sender, events: EventListener
) -> None:
    # (The settings above are as short as they go: the worker applies what is fresh.)
    with psycopg.connect(short_window, autocommit=True) as db:
        request_id = new_id()
        ahead = database_now(db) + timedelta(minutes=4)
        send_raw(sender, sign(submit(request_id, initial_status="pending"), issued_at=ahead))
        approval = sign(command("approve", request_id, 1, actor="alice"), issued_at=ahead)
        send_raw(sender, approval)
        (applied,) = answers(events, approval["command_id"], "alice")
        assert applied["event_type"] == "transition.applied", applied
        assert revision_of(db, request_id) == 2


def test_the_database_refuses_to_forget_a_ledger_entry_before_its_keep_period(
    db: psycopg.Connection[Any],
) -> None:
    # Given a command just recorded
    request_id = new_id()
    outcome = transaction.apply_command(db, sign(submit(request_id)))
    command_id = outcome.event["command_id"]
    # When anyone deletes its ledger entry, the database refuses
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="is kept until"):
        db.execute("DELETE FROM processed_commands WHERE command_id = %s", (command_id,))
    row = db.execute(
        "SELECT keep_until > now() + interval '29 days' FROM processed_commands "
        "WHERE command_id = %s",
        (command_id,),
    ).fetchone()
    assert row == (True,)


def test_retention_forgets_only_entries_past_their_keep_period(
    db: psycopg.Connection[Any],
) -> None:
    # Given two recorded commands, one of them past the instant it was to be kept until
    kept = transaction.apply_command(db, sign(submit(new_id())))
    past = transaction.apply_command(db, sign(submit(new_id())))
    db.execute(
        "UPDATE processed_commands SET keep_until = now() - interval '1 second' "
        "WHERE command_id = %s",
        (past.event["command_id"],),
    )
    # When retention runs
    apply_retention(db, RetentionPolicy(log_retention=None))
    # Then only that one is forgotten
    left = {
        row[0]
        for row in db.execute(
            "SELECT command_id FROM processed_commands WHERE command_id = ANY(%s)",
            ([kept.event["command_id"], past.event["command_id"]],),
        ).fetchall()
    }
    assert left == {kept.event["command_id"]}
