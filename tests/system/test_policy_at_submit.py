"""The deployment's approval policy, applied by a real worker at submit: the requester can
add to what its rule requires, never loosen it; the request and its submitted decision name
the policy; with no policy applied every submit is refused; requester mode is the old
behaviour, announced loudly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import migrated_database, purge_queues
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import register, sign
from tests.support.policies import apply_policy
from tests.support.processes import WorkerProcess
from tests.support.services import spare_vhost
from tests.system.test_metrics import send

pytestmark = pytest.mark.system

POLICY = """\
policy: 1
rules:
  - id: critical-accounts
    description: Limits on accounts need two SREs and the security officer.
    when:
      state_type: [account]
      risk_level: [high, critical]
    require:
      - group: sre
        min_approvals: 2
      - actor: sec-officer
    pending_for: 1h
  - id: contractors
    when:
      requester_group: [contractors]
    require:
      - group: cab
  - id: default
    require: []
"""

REQUESTER = "req-policy-alice"
CONTRACTOR = "req-policy-carl"
SRES = ("sre-ann", "sre-bob", "sre-cid")


@pytest.fixture(scope="module")
def policy_database(postgres_server_url: str) -> Iterator[str]:
    """A database of its own under :data:`POLICY` (version 2, after the tests' open one),
    with its approvers registered in their groups."""
    with migrated_database(postgres_server_url) as url:
        apply_policy(url, POLICY)
        register(url, REQUESTER, roles=("requester",))
        register(url, CONTRACTOR, roles=("requester",), groups=("contractors",))
        for sre in SRES:
            register(url, sre, roles=("approver",), groups=("sre",))
        register(url, "sec-officer", roles=("approver",))
        register(url, "friend", roles=("approver",))
        register(url, "cab-carol", roles=("approver",), groups=("cab",))
        register(url, "ops", roles=("operator",))
        yield url


def start_worker(database_url: str, broker_url: str, log_path: Path, **env: str) -> WorkerProcess:
    purge_queues(broker_url)
    worker = WorkerProcess(
        database_url, broker_url, concurrency=1, log_path=log_path, extra_env=env
    )
    worker.wait_ready(timeout=60)
    return worker


@contextmanager
def worker_alone(
    database_url: str, broker_url: str, log_path: Path, **env: str
) -> Iterator[tuple[str, EventListener]]:
    """A worker on a virtual host of its own (the module's worker consumes the test broker's
    commands on another database): its broker URL and a listener of its events."""
    with spare_vhost(broker_url) as url:
        worker = start_worker(database_url, url, log_path, **env)
        listener = EventListener(url)
        try:
            yield url, listener
        finally:
            listener.close()
            worker.stop()


@pytest.fixture(scope="module")
def policy_worker(
    policy_database: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log_path = tmp_path_factory.mktemp("policy-worker") / "worker.log"
    worker = start_worker(policy_database, broker_url, log_path)
    try:
        yield worker
    finally:
        worker.stop()


def outcome(broker_url: str, events: EventListener, payload: dict[str, Any]) -> dict[str, Any]:
    signed = sign(payload)
    send(broker_url, [signed])
    return events.wait_for([signed["command_id"]], timeout=60)[signed["command_id"]]


def account_change(request_id: str, *, actor: str = REQUESTER, **args: Any) -> dict[str, Any]:
    payload = submit(request_id, actor=actor)
    payload["args"].update(
        state_type="account",
        mutation_type="raise-limit",
        intent={
            "operation_name": "raise-limit",
            "risk_level": "critical",
            "blast_radius": {"scope": "global"},
        },
        **args,
    )
    return payload


def requirements(event: dict[str, Any]) -> list[tuple[str, int, str, str | None, int]]:
    return [
        (
            r["approval_id"],
            r["step_order"],
            r["source"],
            r.get("approver_group"),
            r["min_approvals"],
        )
        for r in event["request"]["approval_requirements"]
    ]


def test_a_requester_cannot_submit_a_critical_change_straight_to_approved(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    event = outcome(broker_url, events, account_change(new_id(), initial_status="approved"))

    assert event["event_type"] == "transition.rejected"
    assert event["rejection"]["code"] == "policy_violation"
    message = event["rejection"]["message"]
    assert "critical-accounts" in message and "group sre, 2 approvals" in message
    assert "actor sec-officer" in message and "approved" in message


def test_a_submit_takes_its_rules_steps_as_policy_requirements_and_names_the_policy(
    policy_worker: WorkerProcess, policy_database: str, broker_url: str, events: EventListener
) -> None:
    request_id = new_id()
    event = outcome(broker_url, events, account_change(request_id))

    assert event["event_type"] == "transition.applied", event
    request = event["request"]
    assert (request["status"], request["pending_reason"]) == ("pending", "approval")
    assert requirements(event) == [
        ("policy-1", 1, "policy", "sre", 2),
        ("policy-2", 2, "policy", None, 1),
    ]
    assert request["approval_requirements"][1]["approver_id"] == "sec-officer"
    reference = request["policy"]
    assert (reference["version"], reference["rule_id"]) == (2, "critical-accounts")
    submitted = next(d for d in event["decisions"] if d["type"] == "submitted")
    assert submitted["metadata"]["policy"] == reference
    with psycopg.connect(policy_database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT policy FROM mutation_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
    assert row is not None and row[0] == reference


def test_a_friend_named_by_the_requester_is_a_further_step_not_a_way_around_the_rule(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    request_id = new_id()
    friendly = account_change(
        request_id, approval_requirements=[{"approval_id": "by-friend", "approver_id": "friend"}]
    )
    submitted = outcome(broker_url, events, friendly)
    assert requirements(submitted)[2] == ("by-friend", 3, "requester", None, 1)

    # When the friend grants at once
    early = outcome(
        broker_url,
        events,
        command(
            "approve_requirement", request_id, 1, actor="friend", args={"approval_id": "by-friend"}
        ),
    )

    # Then the friend's step waits behind the policy's
    assert early["rejection"]["code"] == "approval_not_allowed"
    assert "step 1 is still open" in early["rejection"]["message"]


def test_the_policys_steps_approve_the_request_when_all_are_granted(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    request_id = new_id()
    outcome(broker_url, events, account_change(request_id))
    grants = [("sre-ann", "policy-1"), ("sre-bob", "policy-1"), ("sec-officer", "policy-2")]
    last: dict[str, Any] = {}
    for revision, (actor, approval_id) in enumerate(grants, start=1):
        last = outcome(
            broker_url,
            events,
            command(
                "approve_requirement",
                request_id,
                revision,
                actor=actor,
                args={"approval_id": approval_id},
            ),
        )
        assert last["event_type"] == "transition.applied", last

    assert (last["to_status"], last["revision"]) == ("approved", 4)


def waits_until(event: dict[str, Any]) -> timedelta:
    """How long after its submit the request expires."""
    request = event["request"]
    expires = datetime.fromisoformat(request["expires_at"].replace("Z", "+00:00"))
    return expires - datetime.fromisoformat(request["created_at"].replace("Z", "+00:00"))


def test_pending_for_caps_the_expiry_a_requester_asks_for_and_sets_one_where_none_is(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    far = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    asked_far = outcome(
        broker_url, events, account_change(new_id(), initial_status="pending", expires_at=far)
    )
    asked_nothing = outcome(broker_url, events, account_change(new_id()))

    assert waits_until(asked_far) == waits_until(asked_nothing) == timedelta(hours=1)


def test_a_requester_may_ask_for_less_than_pending_for(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()
    event = outcome(
        broker_url, events, account_change(new_id(), initial_status="pending", expires_at=soon)
    )

    assert timedelta(minutes=15) < waits_until(event) < timedelta(hours=1)


def test_a_rule_is_chosen_by_the_submitters_registered_groups(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    event = outcome(broker_url, events, submit(new_id(), actor=CONTRACTOR))

    assert event["request"]["policy"]["rule_id"] == "contractors"
    assert requirements(event) == [("policy-1", 1, "policy", "cab", 1)]


def test_a_rule_that_requires_nothing_leaves_the_initial_status_to_the_requester(
    policy_worker: WorkerProcess, broker_url: str, events: EventListener
) -> None:
    event = outcome(
        broker_url, events, submit(new_id(), actor=REQUESTER, initial_status="approved")
    )

    assert (event["event_type"], event["to_status"]) == ("transition.applied", "approved")
    assert event["request"]["policy"]["rule_id"] == "default"
    assert event["request"]["approval_requirements"] == []


def test_a_later_policy_version_governs_later_submits_only(
    postgres_server_url: str, broker_url: str, tmp_path: Path
) -> None:
    with (
        migrated_database(postgres_server_url, POLICY) as database,
        worker_alone(database, broker_url, tmp_path / "worker.log") as (url, events),
    ):
        for sre in SRES[:1]:
            register(database, sre, roles=("approver",), groups=("sre",))
        before = outcome(url, events, account_change(new_id()))
        # When the policy changes: critical account changes now need the CAB only
        apply_policy(
            database, POLICY.replace("- group: sre\n        min_approvals: 2\n", "- group: cab\n")
        )
        after = outcome(url, events, account_change(new_id()))
        granted = outcome(
            url,
            events,
            command(
                "approve_requirement",
                before["request_id"],
                1,
                actor="sre-ann",
                args={"approval_id": "policy-1"},
            ),
        )

    # Then the earlier request keeps its policy's requirements, the later one has the new
    assert before["request"]["policy"]["version"] == 1
    assert after["request"]["policy"]["version"] == 2
    assert requirements(before)[0] == ("policy-1", 1, "policy", "sre", 2)
    assert requirements(after)[0] == ("policy-1", 1, "policy", "cab", 1)
    assert granted["event_type"] == "transition.applied", granted


def test_with_no_policy_applied_every_submit_is_refused_and_says_how_to_apply_one(
    postgres_server_url: str, broker_url: str, tmp_path: Path
) -> None:
    with (
        migrated_database(postgres_server_url, policy=None) as database,
        worker_alone(database, broker_url, tmp_path / "worker.log") as (url, events),
    ):
        event = outcome(url, events, submit(new_id(), actor=REQUESTER))

    assert event["rejection"]["code"] == "policy_violation"
    assert event["rejection"]["message"] == (
        "no approval policy is applied: governance policy apply FILE"
    )


def test_in_requester_mode_the_requester_chooses_and_the_worker_warns_loudly(
    policy_database: str, broker_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    with worker_alone(policy_database, broker_url, log_path, GOVERNANCE_POLICY="requester") as (
        url,
        events,
    ):
        event = outcome(url, events, account_change(new_id(), initial_status="approved"))

    assert (event["event_type"], event["to_status"]) == ("transition.applied", "approved")
    assert event["request"]["policy"] is None
    assert "GOVERNANCE_POLICY=requester: DEVELOPMENT MODE" in log_path.read_text()
