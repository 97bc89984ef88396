"""What the client library answers about the approval policy, from the database in one
statement each: ``Queries.explain`` (why a request needs what it needs, and who may decide
each pending requirement now) and ``Queries.pending_for`` (what an approver may decide now).

The requests are submitted through the guarded transaction under a policy of the test's own
database: critical account changes need two SREs, then the security officer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from governance.authentication import Trust
from producer.queries import EXPLAIN, PENDING_FOR, Queries
from tests.conftest import migrated_database
from tests.support.commands import command, new_id, submit
from tests.support.identities import key_for, register
from tests.support.policies import apply_policy
from tests.support.services import owner_bypassing_guards
from tests.support.signed import apply_command
from worker import registry

pytestmark = pytest.mark.integration

POLICY = """\
policy: 1
rules:
  - id: critical-accounts
    description: Limits on accounts need two SREs, then the security officer.
    when:
      state_type: [account]
      risk_level: [high, critical]
    require:
      - group: xq-sre
        min_approvals: 2
      - actor: xq-sec
  - id: default
    require: []
"""
REQUESTER = "xq-req"
ANN, BOB, CID = "xq-ann", "xq-bob", "xq-cid"
#: In the group, but no approver; an approver whose only key is revoked.
DAN, EVE = "xq-dan", "xq-eve"
SEC = "xq-sec"


@pytest.fixture
def database(postgres_server_url: str) -> Iterator[str]:
    """A database of this test alone under :data:`POLICY`, its actors registered."""
    with migrated_database(postgres_server_url) as url:
        apply_policy(url, POLICY)
        register(url, REQUESTER, roles=("requester",))
        register(url, ANN, roles=("requester", "approver"), groups=("xq-sre",))
        for approver in (BOB, CID, EVE):
            register(url, approver, roles=("approver",), groups=("xq-sre",))
        register(url, DAN, roles=("requester",), groups=("xq-sre",))
        register(url, SEC, roles=("approver",))
        register(url, "xq-cab", roles=("approver",), groups=("xq-cab",))
        register(url, "xq-ops", roles=("operator",))
        with psycopg.connect(url, autocommit=True) as conn:
            registry.revoke_key(conn, key_for(EVE).key_id)
        yield url


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


def submit_account_change(
    conn: psycopg.Connection[Any],
    *,
    actor: str = REQUESTER,
    requirements: list[dict[str, Any]] | None = None,
    trust: Trust | None = None,
) -> str:
    """A critical account change, submitted; its request id."""
    request_id = new_id("xq")
    payload = submit(request_id, actor=actor, requirements=requirements)
    payload["args"].update(
        state_type="account",
        mutation_type="raise-limit",
        intent={"operation_name": "raise-limit", "risk_level": "critical"},
    )
    stored = apply_command(conn, payload, trust) if trust else apply_command(conn, payload)
    assert stored.event["event_type"] == "transition.applied", stored.event
    return request_id


def grant(
    conn: psycopg.Connection[Any], request_id: str, revision: int, actor: str, approval: str
) -> None:
    stored = apply_command(
        conn,
        command(
            "approve_requirement", request_id, revision, actor=actor, args={"approval_id": approval}
        ),
    )
    assert stored.event["event_type"] == "transition.applied", stored.event


def inbox(database: str, actor: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(d.request.request_id, d.approval_ids) for d in Queries(database).pending_for(actor)]


# --------------------------------------------------------------------------- explain


def test_explain_names_the_policy_version_and_rule_and_each_requirements_source_and_step(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    # Given a critical account change whose requester adds an approval of its own
    request_id = submit_account_change(
        conn, requirements=[{"approval_id": "approval-1", "approver_group": "xq-cab"}]
    )
    version = conn.execute("SELECT max(version) FROM policy_versions").fetchone()

    # When it is explained
    explained = Queries(database).explain(request_id)

    # Then it names the version and the rule it was submitted under, as the document has it
    assert explained is not None
    policy = explained.request.policy
    assert policy is not None and version is not None
    assert (policy.version, policy.rule_id) == (version[0], "critical-accounts")
    assert explained.rule is not None
    assert explained.rule["description"] == (
        "Limits on accounts need two SREs, then the security officer."
    )
    assert explained.rule["when"] == {"state_type": ["account"], "risk_level": ["high", "critical"]}
    # And each requirement with its source and step; only step 1 is open
    assert [
        (r.requirement.approval_id, r.requirement.source.value, r.requirement.step_order)
        for r in explained.requirements
    ] == [("policy-1", "policy", 1), ("policy-2", "policy", 2), ("approval-1", "requester", 3)]
    assert explained.open_step == 1
    assert [r.waiting_for_step for r in explained.requirements] == [None, 1, 1]


def test_explain_says_who_may_decide_the_open_step_now_and_why_the_others_may_not(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = submit_account_change(conn)

    explained = Queries(database).explain(request_id)

    assert explained is not None
    first, second = explained.requirements
    assert first.may_decide_now == (ANN, BOB, CID)
    assert first.not_eligible == ((DAN, "no role approver"), (EVE, "no unrevoked key"))
    # The security officer's step waits for the SREs'
    assert (second.may_decide_now, second.waiting_for_step) == ((), 1)


def test_explain_leaves_out_the_submitter_and_whoever_already_decided_for_the_request(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    # Given an SRE's own request, granted once by another SRE
    request_id = submit_account_change(conn, actor=ANN)
    grant(conn, request_id, 1, BOB, "policy-1")

    explained = Queries(database).explain(request_id)

    assert explained is not None
    first = explained.requirements[0]
    assert [g.actor_id for g in first.requirement.grants] == [BOB]
    assert first.may_decide_now == (CID,)
    assert dict(first.not_eligible) == {
        ANN: "the submitter",
        BOB: "already a decider of this request",
        DAN: "no role approver",
        EVE: "no unrevoked key",
    }


def test_explain_moves_to_the_next_step_once_the_open_one_is_granted(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = submit_account_change(conn)
    grant(conn, request_id, 1, ANN, "policy-1")
    grant(conn, request_id, 2, BOB, "policy-1")

    explained = Queries(database).explain(request_id)

    assert explained is not None
    assert explained.open_step == 2
    first, second = explained.requirements
    assert (first.requirement.status.value, first.may_decide_now) == ("approved", ())
    assert second.may_decide_now == (SEC,)


def test_explain_of_a_named_approver_the_registry_does_not_have_says_so(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    # Given a request in requester mode naming an approver nobody registered
    request_id = submit_account_change(
        conn,
        requirements=[{"approval_id": "approval-1", "approver_id": "xq-ghost"}],
        trust=Trust(policy_required=False),
    )

    explained = Queries(database).explain(request_id)

    # Then it was submitted under no policy, and nobody may decide its approval
    assert explained is not None
    assert (explained.request.policy, explained.rule) == (None, None)
    (only,) = explained.requirements
    assert (only.requirement.source.value, only.may_decide_now) == ("requester", ())
    assert only.not_eligible == (("xq-ghost", "not registered"),)


def test_explain_of_a_request_that_needs_nothing_has_no_open_step(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id("xq")
    apply_command(conn, submit(request_id, actor=REQUESTER))

    explained = Queries(database).explain(request_id)

    assert explained is not None
    assert explained.request.policy is not None
    assert (explained.request.policy.rule_id, explained.rule) == (
        "default",
        {
            "id": "default",
            "require": [],
        },
    )
    assert (explained.open_step, explained.requirements) == (None, ())
    assert explained.to_dict()["status"] == "created"


def test_explain_of_an_unknown_request_is_none(database: str) -> None:
    assert Queries(database).explain(new_id("ghost")) is None


def test_an_explanation_as_json_has_every_requirement_with_who_may_decide_it(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = submit_account_change(conn)

    explained = Queries(database).explain(request_id)

    assert explained is not None
    document = explained.to_dict()
    assert {k: document[k] for k in ("request_id", "status", "pending_reason", "submitter")} == {
        "request_id": request_id,
        "status": "pending",
        "pending_reason": "approval",
        "submitter": REQUESTER,
    }
    assert document["policy"]["rule_id"] == "critical-accounts"
    assert document["open_step"] == 1
    first = document["requirements"][0]
    assert (first["approval_id"], first["source"], first["may_decide_now"]) == (
        "policy-1",
        "policy",
        [ANN, BOB, CID],
    )
    assert first["not_eligible"][0] == {"actor_id": DAN, "reason": "no role approver"}


# --------------------------------------------------------------------------- pending_for


def test_pending_for_lists_what_an_approver_may_decide_now(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = submit_account_change(conn)

    assert inbox(database, BOB) == [(request_id, ("policy-1",))]
    # The security officer's step is not open yet
    assert inbox(database, SEC) == []


def test_pending_for_leaves_out_those_who_may_not_approve_at_all(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    submit_account_change(conn)
    registry.set_active(conn, CID, False)

    # No approver role, no unrevoked key, inactive, unknown
    for actor in (DAN, EVE, CID, "xq-ghost"):
        assert inbox(database, actor) == [], actor


def test_pending_for_leaves_out_the_submitters_own_requests_and_those_it_decided(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    # Given ann's own request, and another she has granted
    own = submit_account_change(conn, actor=ANN)
    granted = submit_account_change(conn)
    grant(conn, granted, 1, ANN, "policy-1")

    assert inbox(database, ANN) == []
    assert inbox(database, BOB) == [(own, ("policy-1",)), (granted, ("policy-1",))]


def test_pending_for_follows_the_open_step(database: str, conn: psycopg.Connection[Any]) -> None:
    request_id = submit_account_change(conn)
    grant(conn, request_id, 1, ANN, "policy-1")
    grant(conn, request_id, 2, BOB, "policy-1")

    assert inbox(database, SEC) == [(request_id, ("policy-2",))]
    assert inbox(database, CID) == []


def test_pending_for_by_state_and_as_json(database: str, conn: psycopg.Connection[Any]) -> None:
    request_id = submit_account_change(conn)

    found = Queries(database).pending_for(BOB, state_id="state-1")

    assert [d.request.request_id for d in found] == [request_id]
    assert Queries(database).pending_for(BOB, state_id="elsewhere") == []
    document = found[0].to_dict()
    assert (document["request_id"], document["may_decide"]) == (request_id, ["policy-1"])
    assert document["policy"]["rule_id"] == "critical-accounts"


# --------------------------------------------------------------------------- plans


def crowd(conn: psycopg.Connection[Any], request_id: str) -> None:
    """Make the database a busy one: 5,000 pending requests like ``request_id`` for 500
    other groups, and 5,000 approvers in them (planted as the owner, without histories)."""
    with owner_bypassing_guards(conn):
        conn.execute(
            """
            INSERT INTO mutation_requests (
                request_id, state_id, state_type, mutation_type, intent, context, status,
                pending_reason, approval_requirements, revision, created_at, updated_at, metadata)
            SELECT 'crowd-' || n, state_id, state_type, mutation_type, intent, context, status,
                   pending_reason,
                   jsonb_build_array(jsonb_build_object(
                       'approval_id', 'policy-1', 'approver_group', 'g' || n %% 500,
                       'status', 'pending', 'step_order', 1, 'min_approvals', 1, 'grants', '[]')),
                   revision, created_at, updated_at, metadata
            FROM mutation_requests, generate_series(1, 5000) AS n
            WHERE request_id = %s
            """,
            (request_id,),
        )
    conn.execute(
        "INSERT INTO actors (actor_id, type, roles, groups) "
        "SELECT 'crowd-' || n, 'user', '{approver}', ARRAY['g' || n % 500] "
        "FROM generate_series(1, 5000) AS n"
    )
    conn.execute("ANALYZE mutation_requests")
    conn.execute("ANALYZE actors")


def plan(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> str:
    return "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", params))


def test_pending_for_finds_its_requests_through_the_index_on_pending_requirements(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = submit_account_change(conn)
    crowd(conn, request_id)

    shown = plan(conn, PENDING_FOR, {"actor_id": BOB, "state_id": None, "limit": 100})

    assert "Bitmap Index Scan on mutation_requests_approvers_idx" in shown, shown
    assert "Seq Scan on mutation_requests" not in shown, shown
    assert inbox(database, BOB) == [(request_id, ("policy-1",))]


def test_explain_finds_a_groups_members_through_the_index_on_groups(
    database: str, conn: psycopg.Connection[Any]
) -> None:
    request_id = submit_account_change(conn)
    crowd(conn, request_id)

    shown = plan(conn, EXPLAIN, {"request_id": request_id})

    assert "Index Scan using mutation_requests_pkey" in shown, shown
    assert "Bitmap Index Scan on actors_groups_idx" in shown, shown
    assert "Seq Scan on actors" not in shown, shown
    explained = Queries(database).explain(request_id)
    assert explained is not None
    assert explained.requirements[0].may_decide_now == (ANN, BOB, CID)
