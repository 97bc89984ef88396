"""A batch is decided as its commands would be one after another: an unsigned copy of a
genuine command, placed ahead of it in the same batch of a real batch worker, claims nothing,
and the genuine command is applied."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import psycopg
import pytest

from producer.client import GovernanceClient
from tests.integration.helpers import answers, request_row
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import sign, trusted_worker_keys
from tests.support.processes import WorkerProcess
from worker import transaction

pytestmark = [pytest.mark.integration, pytest.mark.system]


def test_a_batch_worker_applies_the_genuine_command_an_unsigned_copy_came_ahead_of(
    database_url: str,
    broker_url: str,
    events: EventListener,
    db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    # Given a pending request, an approval signed by its approver and an unsigned copy of it
    request_id = new_id()
    transaction.apply_command(db, sign(submit(request_id, initial_status="pending")))
    genuine = sign(command("approve", request_id, 1, actor="alice"))
    copy_: dict[str, Any] = {k: v for k, v in copy.deepcopy(genuine).items() if k != "auth"}
    # When both wait in the queue, the copy first, for a worker that takes them in batches
    # (sent as they are by a client, which declares the queue as the worker does)
    with GovernanceClient(broker_url, event_verifier=trusted_worker_keys()) as client:
        client.send(copy_)
        client.send(genuine)
    worker = WorkerProcess(
        database_url,
        broker_url,
        concurrency=1,
        log_path=tmp_path / "worker.log",
        extra_env={"GOVERNANCE_BATCH_SIZE": "50", "GOVERNANCE_BATCH_LINGER_MS": "200"},
    )
    try:
        worker.wait_ready()
        found = answers(events, genuine["command_id"], "alice", at_least=2)
    finally:
        worker.stop()
    # Then the copy is refused unauthenticated, and the genuine command is applied once
    refused = [e for e in found if e["event_type"] == "transition.rejected"]
    applied = [e for e in found if e["event_type"] == "transition.applied"]
    assert [e["rejection"]["code"] for e in refused] == ["unauthenticated"], found
    assert [e["authenticated"] for e in refused] == [False]
    assert len(applied) == 1, found
    assert request_row(db, request_id).revision == 2
