"""Whose fault a failure is decides what becomes of the message: the surroundings' faults are
retried for as long as they last, the message's own are bounded and then parked."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors

from governance.parking import ParkCause
from worker.errors import (
    InfrastructureError,
    MessageFault,
    SuspectFault,
    TransientConflict,
    translate,
)
from worker.policy import Action, lost_deliveries_verdict, message_key, not_retried, on_failure
from worker.transaction import NotACommand


def driver_error(sqlstate: str) -> psycopg.Error:
    return pg_errors.lookup(sqlstate)("from the server")


@pytest.mark.parametrize(
    "sqlstate",
    [
        "08006",  # connection failure
        "08001",  # cannot establish a connection
        "40001",  # serialization failure
        "40P01",  # deadlock
        "53300",  # too many connections
        "53100",  # disk full
        "57P01",  # admin shutdown
        "57014",  # query canceled (statement_timeout)
        "57P03",  # cannot connect now (a standby being promoted)
        "55P03",  # lock_timeout expired
        "25006",  # a read-only server: a standby, or an old primary after a failover
        "58030",  # I/O error
        "42P01",  # a table missing: the database is not migrated yet
        "28P01",  # a wrong password
    ],
)
def test_faults_of_the_surroundings_and_the_deployment_are_infrastructure(sqlstate: str) -> None:
    assert isinstance(translate(driver_error(sqlstate)), InfrastructureError)


@pytest.mark.parametrize(
    "sqlstate",
    [
        "22P05",  # untranslatable character
        "22001",  # string too long
        "22003",  # numeric value out of range
        "23503",  # foreign key violation
        "23514",  # check violation
        "54000",  # program limit exceeded (an operational error to the driver)
        "54001",  # statement too complex
    ],
)
def test_errors_the_message_causes_are_its_own_fault(sqlstate: str) -> None:
    assert isinstance(translate(driver_error(sqlstate)), MessageFault)


def test_a_unique_violation_is_a_race_the_transaction_reruns() -> None:
    assert isinstance(translate(driver_error("23505")), TransientConflict)


def test_a_lost_connection_without_a_server_answer_is_infrastructure() -> None:
    assert isinstance(
        translate(psycopg.OperationalError("server closed the connection")), InfrastructureError
    )


def test_anything_but_a_driver_error_is_left_alone() -> None:
    error = RuntimeError("boom")
    assert translate(error) is error


def test_an_infrastructure_fault_is_requeued_however_often_it_happened() -> None:
    verdict = on_failure(InfrastructureError("database down"), retries=10_000, retry_limit=5)
    assert verdict.action is Action.REQUEUE


def test_a_message_fault_is_retried_until_the_limit_then_parked() -> None:
    fault = MessageFault("22P05")
    assert [on_failure(fault, retries=n, retry_limit=3).action for n in range(5)] == [
        Action.RETRY,
        Action.RETRY,
        Action.RETRY,
        Action.PARK,
        Action.PARK,
    ]
    assert "failed 4 times" in on_failure(fault, retries=3, retry_limit=3).reason


def test_retries_back_off_and_the_wait_is_capped() -> None:
    waits = [on_failure(RuntimeError(), retries=n, retry_limit=99).countdown for n in range(10)]
    assert waits == sorted(waits)
    assert max(waits) == 30.0


def test_a_message_that_is_not_a_command_is_parked_at_once() -> None:
    verdict = on_failure(NotACommand("no command_id"), retries=0, retry_limit=5)
    assert (verdict.action, verdict.reason) == (Action.PARK, "no command_id")


def test_lost_deliveries_are_tolerated_up_to_the_limit() -> None:
    assert lost_deliveries_verdict(3, limit=3) is None
    parked = lost_deliveries_verdict(4, limit=3)
    assert parked is not None and parked.action is Action.PARK
    assert "kills its worker" in parked.reason


def test_lost_deliveries_are_counted_per_command_id_or_per_content() -> None:
    assert message_key({"command_id": "c-1", "type": "x"}) == "c-1"
    assert message_key({"command_id": "c-1", "type": "y"}) == "c-1"
    assert message_key([1, 2]) == message_key([1, 2])
    assert message_key([1, 2]).startswith("sha256:")
    assert message_key([1, 2]) != message_key([2, 1])


def test_each_park_verdict_names_its_cause() -> None:
    not_a_command = on_failure(NotACommand("no command_id"), retries=0, retry_limit=5)
    poison = on_failure(RuntimeError("boom"), retries=5, retry_limit=5)
    lost = lost_deliveries_verdict(4, limit=3)
    assert lost is not None
    assert [v.park_reason.cause for v in (not_a_command, poison, lost)] == [
        ParkCause.NOT_A_COMMAND,
        ParkCause.POISON,
        ParkCause.LOST_DELIVERIES,
    ]
    assert poison.park_reason.text == poison.reason


def test_a_retry_that_cannot_be_sent_as_it_came_is_parked_as_poison() -> None:
    retry = on_failure(RuntimeError("boom"), retries=0, retry_limit=5)
    parked = not_retried(retry, "a key is given twice")
    assert (parked.action, parked.park_reason.cause) == (Action.PARK, ParkCause.POISON)
    assert parked.reason.endswith("not retried: a key is given twice")


@pytest.mark.parametrize(
    "sqlstate",
    [
        "57014",  # query canceled (statement_timeout)
        "55P03",  # lock_timeout expired
        "XX000",  # internal error
        "XX001",  # data corrupted
    ],
)
def test_faults_either_side_may_cause_are_suspect(sqlstate: str) -> None:
    assert isinstance(translate(driver_error(sqlstate)), SuspectFault)


def test_a_suspect_fault_is_retried_counted_until_its_limit() -> None:
    verdict = on_failure(SuspectFault("57014"), retries=3, retry_limit=5, suspect_retry_limit=4)

    assert verdict.action is Action.RETRY
    assert verdict.countdown == 4.0


def test_a_suspect_fault_past_its_limit_is_parked_as_keeping_timing_out() -> None:
    verdict = on_failure(SuspectFault("57014"), retries=4, retry_limit=5, suspect_retry_limit=4)

    assert verdict.action is Action.PARK
    assert verdict.cause is ParkCause.KEEPS_TIMING_OUT
    assert "failed 5 times, the last with 57014" in verdict.reason
