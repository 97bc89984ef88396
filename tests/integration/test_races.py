"""The stale-snapshot race, for real: commands issued against the same revision on separate
connections (or processes) that all read revision r before any of them commits.

The guarantee under test: exactly one of them is applied; every other one is
rejected with ``concurrency_conflict`` reporting the revision and the status it lost to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import (
    Racer,
    apply_in_process,
    applying,
    code_of,
    decisions_after,
    pending,
    request_row,
    row_lock_held,
    run_processes,
    submitted,
    wait_for_lock_waiters,
)
from tests.support.commands import command
from worker.expiry import expire_command
from worker.transaction import StoredOutcome

pytestmark = pytest.mark.integration

REVISION = 1


@dataclass(frozen=True)
class Pair:
    """Two commands that conflict, both issued against revision 1 of a fresh request."""

    name: str
    setup: Callable[[psycopg.Connection[Any]], str]
    first: Callable[[str], dict[str, Any]]
    second: Callable[[str], dict[str, Any]]


def _approve(request_id: str) -> dict[str, Any]:
    return command("approve", request_id, REVISION)


def _single_approval(conn: psycopg.Connection[Any]) -> str:
    return submitted(conn, requirements=[{"approval_id": "a1", "approver_id": "alice"}])


def _stale_version(conn: psycopg.Connection[Any]) -> str:
    return pending(conn, expected_state_version="v1")


PAIRS = [
    Pair("approve-vs-cancel", pending, _approve, lambda r: command("cancel", r, REVISION)),
    Pair("approve-vs-reject", pending, _approve, lambda r: command("reject", r, REVISION)),
    Pair("approve-vs-expire", pending, _approve, lambda r: expire_command(r, REVISION)),
    Pair(
        "approve_requirement-vs-cancel",
        _single_approval,
        lambda r: command(
            "approve_requirement", r, REVISION, actor="alice", args={"approval_id": "a1"}
        ),
        lambda r: command("cancel", r, REVISION),
    ),
    Pair(
        "resolve_version-vs-approve",
        _stale_version,
        lambda r: command(
            "resolve_version",
            r,
            REVISION,
            args={"current_state_version": "v2", "strategy": "reject_stale"},
        ),
        _approve,
    ),
]


def assert_one_winner(
    db: psycopg.Connection[Any], request_id: str, outcomes: list[StoredOutcome]
) -> None:
    """Exactly one applied; the other lost to it, and learned to what."""
    winners = [o for o in outcomes if o.applied]
    losers = [o for o in outcomes if not o.applied]
    assert len(winners) == 1, [o.event for o in outcomes]
    winner = winners[0].event
    for loser in losers:
        assert code_of(loser) == "concurrency_conflict", loser.event
        assert loser.event["rejection"]["expected_revision"] == REVISION
        assert loser.event["rejection"]["current_revision"] == REVISION + 1
        assert loser.event["rejection"]["current_status"] == winner["to_status"]
        assert loser.event["request"]["revision"] == REVISION + 1
    assert request_row(db, request_id).revision == REVISION + 1
    assert request_row(db, request_id).status == winner["to_status"]
    lifecycle = decisions_after(db, request_id, REVISION, category="lifecycle")
    assert [(rev, cmd) for rev, _, _, cmd in lifecycle] == [(REVISION + 1, winner["command_id"])]
    # Nothing of the loser reached the request's history.
    assert {cmd for *_, cmd in decisions_after(db, request_id, REVISION)} == {winner["command_id"]}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_commands_queued_behind_a_held_row_lock_have_exactly_one_winner(
    db: psycopg.Connection[Any], database_url: str, pair: Pair
) -> None:
    # Given a request at revision r, and the test holding its row lock
    request_id = pair.setup(db)
    with row_lock_held(database_url, request_id):
        # When two commands against revision r are both blocked behind that lock
        racers = [
            Racer(database_url, applying(pair.first(request_id))),
            Racer(database_url, applying(pair.second(request_id))),
        ]
        for racer in racers:
            racer.start()
        wait_for_lock_waiters(db, [racer.backend_pid for racer in racers])
    # ... and the lock is released (the holder committed)
    outcomes = [racer.outcome() for racer in racers]

    # Then exactly one is applied and the other is a concurrency conflict naming the winner
    assert_one_winner(db, request_id, outcomes)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_commands_released_together_by_a_barrier_have_exactly_one_winner(
    db: psycopg.Connection[Any], database_url: str, pair: Pair
) -> None:
    # Given a request at revision r and two commands against r, ready on separate connections
    request_id = pair.setup(db)
    barrier = threading.Barrier(2)
    racers = [
        Racer(database_url, applying(pair.first(request_id)), barrier),
        Racer(database_url, applying(pair.second(request_id)), barrier),
    ]

    # When they are released at the same moment, neither holding the lock first
    for racer in racers:
        racer.start()
    outcomes = [racer.outcome() for racer in racers]

    # Then exactly one wins
    assert_one_winner(db, request_id, outcomes)


@pytest.mark.slow
def test_fifty_commands_from_four_processes_on_one_revision_apply_once(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given a pending request at revision r and 50 commands against r
    request_id = pending(db)
    kinds = ("approve", "reject", "cancel")
    payloads = [command(kinds[i % 3], request_id, REVISION) for i in range(50)]

    # When four processes, each on its own connection, apply them once released together
    results = run_processes(apply_in_process, database_url, payloads, processes=4)

    # Then one is applied and 49 are concurrency conflicts, each with its own outcome row
    assert len(results) == 50
    codes = sorted((code or "applied") for _, _, code, _ in results)
    assert codes == ["applied"] + ["concurrency_conflict"] * 49
    command_ids = [p["command_id"] for p in payloads]
    assert {cid for cid, *_ in results} == set(command_ids)
    outbox = db.execute(
        "SELECT count(*), count(DISTINCT command_id) FROM outbox_events WHERE command_id = ANY(%s)",
        (command_ids,),
    ).fetchone()
    assert outbox == (50, 50)
    assert request_row(db, request_id).revision == REVISION + 1
    assert len(decisions_after(db, request_id, REVISION, category="lifecycle")) == 1


def _supersede(request_id: str, by: str) -> dict[str, Any]:
    return command("supersede", request_id, REVISION, args={"superseding_request_id": by})


def test_two_requests_superseding_each_other_at_once_never_both_apply(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given two live requests, each at revision 1, and A-by-B and B-by-A on two connections
    a, b = pending(db), pending(db)
    for _ in range(10):
        barrier = threading.Barrier(2)
        racers = [
            Racer(database_url, applying(_supersede(a, b)), barrier),
            Racer(database_url, applying(_supersede(b, a)), barrier),
        ]
        # When they are released together (each locks both rows, in the one global order)
        for racer in racers:
            racer.start()
        outcomes = [racer.outcome() for racer in racers]
        # Then exactly one applies, and the other finds its superseding request superseded
        codes = sorted(str(code_of(o)) for o in outcomes)
        assert codes == ["None", "invalid_transition"], codes
        loser = next(o for o in outcomes if code_of(o) is not None)
        assert "superseded" in loser.event["rejection"]["message"]
        statuses = sorted(request_row(db, r).status for r in (a, b))
        assert statuses == ["pending", "superseded"]
        a, b = pending(db), pending(db)


def test_a_supersede_by_a_request_that_was_never_submitted_is_not_found(
    db: psycopg.Connection[Any],
) -> None:
    request_id = pending(db)
    outcome = applying(_supersede(request_id, "req-never-submitted"))(db)
    assert code_of(outcome) == "not_found"
    assert "req-never-submitted" in outcome.event["rejection"]["message"]
    assert request_row(db, request_id).status == "pending"
