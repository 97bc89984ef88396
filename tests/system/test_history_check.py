"""The history check itself: it passes a true history and names each kind of violation in a
history that breaks a guarantee. Histories are made by the real guarded transaction on the
test database; only what a producer would have seen is falsified."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kombu
import psycopg
import pytest

from governance.events import with_sequence
from producer.history import DeadLetterRecord, HistoryReport, check_history
from tests.support.commands import command, new_id, submit
from tests.support.services import owner_bypassing_guards
from tests.support.signed import apply_command

pytestmark = pytest.mark.integration


@pytest.fixture
def history(database_url: str) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Three requests taken through submit, approve and a losing cancel; the commands and
    their outcome events, all published."""
    commands: list[dict[str, Any]] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(3):
            request_id = new_id("hist")
            commands += [
                submit(request_id, initial_status="created"),
                command("approve", request_id, 1),
                command("cancel", request_id, 1),
            ]
        outcomes = [apply_command(conn, payload) for payload in commands]
        conn.execute(
            "UPDATE outbox_events SET published_at = now() WHERE sequence = ANY(%s)",
            ([o.sequence for o in outcomes],),
        )
    yield commands, [with_sequence(o.event, o.sequence) for o in outcomes]


def kinds(report: HistoryReport) -> list[str]:
    return sorted({v.kind for v in report.violations})


def test_a_true_history_is_clean_even_with_duplicate_deliveries(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    report = check_history(commands=commands, events=events + events[:2], database_url=database_url)
    report.assert_clean()
    assert report.commands_checked == 9 and report.requests_checked == 3


def test_a_command_without_an_outcome_is_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    report = check_history(commands=commands, events=events[1:], database_url=database_url)
    assert kinds(report) == ["no_outcome"]
    assert report.violations[0].command_id == commands[0]["command_id"]
    with pytest.raises(AssertionError, match="has no outcome"):
        report.assert_clean()


def test_two_different_outcomes_for_one_command_are_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    forged = {**events[1], "event_id": events[4]["event_id"]}
    report = check_history(commands=commands, events=[*events, forged], database_url=database_url)
    assert "several_outcomes" in kinds(report)
    assert "event_mismatch" in kinds(report)


def test_events_arriving_out_of_revision_order_are_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    swapped = [events[1], events[0], *events[2:]]
    assert kinds(check_history(commands=commands, events=swapped, database_url=database_url)) == [
        "out_of_order"
    ]


def test_an_event_that_is_not_in_the_outbox_is_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    assert events[2]["event_type"] == "transition.rejected"
    invented = {**events[2], "event_id": "00000000-0000-4000-8000-000000000000"}
    report = check_history(
        commands=commands, events=[*events[:2], invented, *events[3:]], database_url=database_url
    )
    assert kinds(report) == ["event_not_in_outbox"]


def test_a_dead_letter_beside_an_event_is_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    letter = DeadLetterRecord(commands[2]["command_id"], "the handler failed")
    report = check_history(
        commands=commands, events=events, database_url=database_url, dead_letters=[letter]
    )
    assert kinds(report) == ["event_and_dead_letter"]


def test_a_committed_command_that_was_also_dead_lettered_is_reported_without_its_event(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    parked = commands[2]["command_id"]
    letter = DeadLetterRecord(parked, "delivered 6 times (the message kills its worker)")
    report = check_history(
        commands=commands,
        events=[e for e in events if e["command_id"] != parked],
        database_url=database_url,
        dead_letters=[letter],
    )
    assert kinds(report) == ["committed_and_dead_lettered"]


def test_a_revision_that_does_not_match_the_applied_events_is_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    request_id = commands[0]["request_id"]
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        owner_bypassing_guards(conn),
    ):
        conn.execute(
            "UPDATE mutation_requests SET revision = revision + 1 WHERE request_id = %s",
            (request_id,),
        )
        try:
            report = check_history(commands=commands, events=events, database_url=database_url)
        finally:
            conn.execute(
                "UPDATE mutation_requests SET revision = revision - 1 WHERE request_id = %s",
                (request_id,),
            )
    assert kinds(report) == ["revision_mismatch"]
    assert {v.request_id for v in report.violations} == {request_id}


def test_an_unpublished_outbox_event_is_reported(
    database_url: str, history: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    commands, events = history
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE outbox_events SET published_at = NULL WHERE sequence = %s",
            (events[0]["sequence"],),
        )
        try:
            report = check_history(commands=commands, events=events, database_url=database_url)
        finally:
            conn.execute(
                "UPDATE outbox_events SET published_at = now() WHERE sequence = %s",
                (events[0]["sequence"],),
            )
    assert kinds(report) == ["unpublished"]


def test_a_message_left_in_the_command_queue_is_reported(
    database_url: str,
    broker_url: str,
    history: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    commands, events = history
    name = f"test-history-{new_id('q')}"
    with kombu.Connection(broker_url) as conn:
        queue = kombu.Queue(name, routing_key=name, durable=False, auto_delete=False)
        queue(conn.channel()).declare()
        kombu.Producer(conn.channel()).publish(b"left behind", routing_key=name, exchange="")
        try:
            report = check_history(
                commands=commands,
                events=events,
                database_url=database_url,
                broker_url=broker_url,
                queues=[name],
            )
        finally:
            queue(conn.channel()).delete()
    assert kinds(report) == ["queue_not_empty"]
