"""A command whose own transaction ends in a statement timeout (57014), a lock timeout
(55P03) or an internal error (XX000) every time is retried alone, counted, and parked after
``GOVERNANCE_SUSPECT_RETRY_LIMIT`` with the reason, instead of looping until the broker's
delivery limit; the commands it came with are applied.

The database raises the error itself (a trigger of the test, on the command's own decision),
so the worker meets it exactly as it would a real one: a PostgreSQL error with that SQLSTATE.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from governance.parking import ParkCause
from producer import GovernanceClient
from producer.deadletters import DeadLetter, DeadLetterQueue
from tests.conftest import migrated_database
from tests.support.commands import new_id
from tests.support.identities import Keyring
from tests.support.processes import WorkerProcess
from tests.support.services import spare_vhost

pytestmark = pytest.mark.system

#: Every wait of these tests on the worker is bounded by this (seconds).
PATIENCE = 120

#: The test's fault: raised with the SQLSTATE a command's metadata names, when its decision
#: is written (the command's metadata goes into its decision's).
RAISE_WHAT_THE_REQUEST_ASKS = """
CREATE FUNCTION test_raise_what_it_asks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the test makes this request fail' USING ERRCODE = NEW.metadata->>'fail_with';
END;
$$;
CREATE TRIGGER test_raise_what_it_asks BEFORE INSERT ON request_decisions
    FOR EACH ROW WHEN (NEW.metadata ? 'fail_with') EXECUTE FUNCTION test_raise_what_it_asks();
"""


class Deployment:
    def __init__(self, database_url: str, broker_url: str) -> None:
        self.database_url = database_url
        self.broker_url = broker_url


@pytest.fixture(scope="module")
def deployment(
    postgres_server_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    log_path = Path(tmp_path_factory.mktemp("suspect")) / "worker.log"
    with migrated_database(postgres_server_url) as url, spare_vhost(broker_url) as vhost:
        with psycopg.connect(url, autocommit=True) as owner:
            owner.execute(RAISE_WHAT_THE_REQUEST_ASKS)
        worker = WorkerProcess(
            url,
            vhost,
            log_path=log_path,
            extra_env={
                "GOVERNANCE_SUSPECT_RETRY_LIMIT": "2",
                "GOVERNANCE_INFRASTRUCTURE_RETRY_SECONDS": "0.2",
            },
        )
        try:
            worker.wait_ready()
            yield Deployment(url, vhost)
        finally:
            worker.stop()


def submit(client: GovernanceClient, **metadata: str) -> Any:
    return client.submit(
        new_id("suspect"),
        state_id="cfg",
        state_type="config",
        mutation_type="update",
        intent={"operation_name": "raise-limit"},
        actor="pipeline",
        pending_reason="quota",
        metadata=metadata,
    )


def parked(broker_url: str, command_id: str) -> DeadLetter:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        for letter in DeadLetterQueue(broker_url).list():
            if letter.key == command_id:
                return letter
        time.sleep(0.5)
    raise TimeoutError(f"{command_id} was not parked within {PATIENCE}s")


@pytest.mark.parametrize("sqlstate", ["57014", "55P03", "XX000"])
def test_a_command_that_keeps_failing_with_a_suspect_error_is_parked_and_the_others_applied(
    deployment: Deployment, sqlstate: str
) -> None:
    with GovernanceClient(
        deployment.broker_url, deployment.database_url, signing_key=Keyring(), timeout=PATIENCE
    ) as client:
        failing = submit(client, fail_with=sqlstate)
        others = [submit(client) for _ in range(3)]
        # When it is sent among others
        client.send(failing)
        outcomes = client.send_all_and_wait(others)
        # Then the others are applied
        assert all(o is not None and o["event_type"] == "transition.applied" for o in outcomes)
        # And it is parked after its bounded retries, with the cause and the SQLSTATE
        letter = parked(deployment.broker_url, failing.command_id)
    assert letter.cause is ParkCause.KEEPS_TIMING_OUT
    assert "failed 3 times" in letter.reason
    assert sqlstate in letter.reason
