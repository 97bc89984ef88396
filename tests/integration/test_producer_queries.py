"""Read-only queries: a request with its history, the pending queue, decisions by actor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from producer import GovernanceClient, Queries
from tests.support.commands import new_id
from tests.support.identities import Keyring
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration

INTENT = {"operation_name": "rotate-key"}


@pytest.fixture(scope="module")
def client(
    running_worker: WorkerProcess, broker_url: str, database_url: str
) -> Iterator[GovernanceClient]:
    with GovernanceClient(broker_url, database_url, signing_key=Keyring()) as governance:
        yield governance


def submit_pending(
    client: GovernanceClient, state_id: str, approvers: list[str] | None = None, **kwargs: Any
) -> str:
    request_id = new_id()
    event = client.send_and_wait(
        client.submit(
            request_id,
            state_id=state_id,
            state_type="secret",
            mutation_type="rotate",
            intent=INTENT,
            actor="ci",
            approval_requirements=[{"approver_id": a} for a in approvers or []],
            **kwargs,
        )
    )
    assert event["event_type"] == "transition.applied"
    return request_id


def test_a_request_is_shown_with_its_full_decision_history(client: GovernanceClient) -> None:
    # Given a request submitted for alice's approval, which she then grants
    request_id = submit_pending(client, new_id("state"), ["alice"])
    approval_id = client.queries.request(request_id).request.approval_requirements[0].approval_id
    client.send_and_wait(
        client.approve_requirement(
            request_id, expected_revision=1, actor="alice", approval_id=approval_id, reason="fine"
        )
    )

    # When it is queried
    view = client.queries.request(request_id)

    # Then it stands approved at revision 2 with every decision, in order, with its command
    assert view is not None
    assert (view.request.status.value, view.request.revision) == ("approved", 2)
    history = [(e.revision, e.decision.category.value, e.decision.type) for e in view.history]
    assert history == [
        (1, "lifecycle", "submitted"),
        (1, "lifecycle", "pending"),
        (1, "approval", "requested"),
        (2, "approval", "granted"),
        (2, "lifecycle", "approved"),
    ]
    assert [d.type for d in view.request.decisions] == [h[2] for h in history]
    assert view.to_dict()["decisions"][3]["reason"] == "fine"


def test_an_unknown_request_is_none(database_url: str) -> None:
    # Given no such request / When it is queried / Then there is nothing
    assert Queries(database_url).request(new_id()) is None


def test_the_pending_queue_filters_by_state_reason_and_approver(
    client: GovernanceClient,
) -> None:
    # Given on one state: two requests awaiting alice, one awaiting bob, one in manual review
    state = new_id("state")
    for_alice = {
        submit_pending(client, state, ["alice"]),
        submit_pending(client, state, ["alice", "bob"]),
    }
    for_bob_only = submit_pending(client, state, ["bob"])
    manual = submit_pending(client, state, pending_reason="manual_review")
    submit_pending(client, new_id("other-state"), ["alice"])

    # When the queue is asked by state, by reason and by approver
    queries = client.queries
    by_state = {r.request_id for r in queries.pending(state_id=state)}
    by_reason = {
        r.request_id for r in queries.pending(state_id=state, pending_reason="manual_review")
    }
    by_alice = {r.request_id for r in queries.pending(state_id=state, approver_id="alice")}

    # Then each filter keeps exactly its requests
    assert by_state == for_alice | {for_bob_only, manual}
    assert by_reason == {manual}
    assert by_alice == for_alice


def test_an_approver_leaves_the_queue_once_they_decided(client: GovernanceClient) -> None:
    # Given a request awaiting alice and bob at the same step, which alice granted
    state = new_id("state")
    request_id = submit_pending(client, state, ["alice", "bob"])
    requirement = next(
        r
        for r in client.queries.request(request_id).request.approval_requirements
        if r.approver_id == "alice"
    )
    client.send_and_wait(
        client.approve_requirement(
            request_id, expected_revision=1, actor="alice", approval_id=requirement.approval_id
        )
    )

    # When the queue is asked per approver
    alice = client.queries.pending(state_id=state, approver_id="alice")
    bob = client.queries.pending(state_id=state, approver_id="bob")

    # Then only bob still has it waiting on him
    assert (alice, [r.request_id for r in bob]) == ([], [request_id])


def test_decisions_by_actor_within_a_time_range(
    client: GovernanceClient, db: psycopg.Connection[Any]
) -> None:
    # Given a fresh actor who decided on two requests
    actor = new_id("auditor")
    first, second = (
        submit_pending(client, "s", pending_reason="quota"),
        submit_pending(client, "s", pending_reason="quota"),
    )
    before = db.execute("SELECT now()").fetchone()[0]
    for request_id in (first, second):
        client.send_and_wait(client.approve(request_id, expected_revision=1, actor=actor))
    after = db.execute("SELECT now()").fetchone()[0]

    # When the history of that actor is asked for the window, and for a window before it
    inside = client.queries.decisions_by_actor(actor, since=before, until=after + timedelta(0, 1))
    earlier = client.queries.decisions_by_actor(actor, until=before)

    # Then the window holds exactly its approvals, oldest first, and the earlier one nothing
    assert [(e.request_id, e.decision.type) for e in inside] == [
        (first, "approved"),
        (second, "approved"),
    ]
    assert earlier == []
    assert all(e.decision.occurred_at <= datetime.now(UTC) for e in inside)


def test_queries_run_in_read_only_transactions(database_url: str) -> None:
    # Given the producer's connection settings
    from producer.queries import _connect

    # When a write is attempted on one
    with _connect(database_url) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM mutation_requests")
    # Then PostgreSQL refused it (raised above)
