"""The approval policy's versions and the registry changes it must survive, on a real
database: each apply adds the next version (checked against the registry, audited, under a
lock), and a registry change that would leave the active policy unsatisfiable is refused
unless forced.

Every test has a database of its own: the active policy is the whole deployment's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from governance.policy import Policy
from governance.policy_document import PolicyError, parse_policy
from producer.keys import generate
from tests.conftest import migrated_database
from worker import policy_store, registry
from worker.policy_store import PolicyStoreError, PolicyUnsatisfiable

pytestmark = pytest.mark.integration

CAB = """
policy: 1
rules:
  - id: default
    require: [{group: cab}]
"""
TWO_OF_CAB = """
policy: 1
rules:
  - id: critical
    when: {risk_level: [critical]}
    require: [{group: cab, min_approvals: 2}]
  - id: default
    require: [{group: cab}]
"""


@pytest.fixture
def url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test alone, with no policy applied yet."""
    with migrated_database(postgres_server_url, policy=None) as database_url:
        yield database_url


@pytest.fixture
def conn(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def waiting_for_the_lock(conn: psycopg.Connection[Any], sessions: int) -> None:
    """Wait until ``sessions`` other sessions wait for an advisory lock."""
    deadline = time.monotonic() + 30
    while True:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event = 'advisory'"
        ).fetchone()
        if row is not None and row[0] >= sessions:
            return
        assert time.monotonic() < deadline, "nobody waits for the policy lock"
        time.sleep(0.05)


def add(
    conn: psycopg.Connection[Any],
    actor_id: str,
    roles: list[str],
    groups: tuple[str, ...] = (),
) -> str:
    """Register ``actor_id`` with a key; its key id."""
    added = registry.add_actor(
        conn, actor_id, None, "user", roles, list(groups), public_key=generate("x").public_key_b64
    )
    return added.keys[0].key_id


@pytest.fixture
def cab(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """A requester, and two approvers in group cab: each actor's key id."""
    return {
        "ci": add(conn, "ci", ["requester"]),
        "alice": add(conn, "alice", ["approver"], ("cab",)),
        "bob": add(conn, "bob", ["approver"], ("cab",)),
    }


def versions(conn: psycopg.Connection[Any]) -> list[int]:
    return [v.version for v in policy_store.policy_history(conn)]


def audit(conn: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT actor_id, key_id, details, by FROM registry_audit WHERE action = %s ORDER BY id",
        (action,),
    ).fetchall()


def apply(conn: psycopg.Connection[Any], text: str, *, force: bool = False) -> Policy:
    policy = parse_policy(text)
    policy_store.apply_policy(conn, policy, force=force)
    return policy


# --------------------------------------------------------------------------- apply


def test_an_apply_adds_the_next_version_with_its_document_and_sha256(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    # Given the versions there are
    before = versions(conn)
    policy = parse_policy(TWO_OF_CAB)

    # When a policy is applied
    applied = policy_store.apply_policy(conn, policy, force=False)

    # Then it is the next version, active, with its document and the document's sha256
    assert applied.new and applied.forced_past == ()
    version = applied.version
    assert version.version == (before[-1] if before else 0) + 1
    assert (version.sha256, dict(version.document), version.forced) == (
        policy.sha256,
        dict(policy.document),
        False,
    )
    assert policy_store.active_policy(conn) == version
    assert policy_store.policy_version(conn, version.version) == version
    assert versions(conn) == [*before, version.version]
    assert version.policy.rules == policy.rules
    # And the database recorded the apply, as whom
    *_, (actor_id, key_id, details, by) = audit(conn, "policy_applied")
    assert details == {"version": version.version, "sha256": policy.sha256, "forced": False}
    assert (actor_id, key_id, by) == (None, None, conn.info.user)


def test_applying_the_active_document_again_adds_no_version(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    first = policy_store.apply_policy(conn, parse_policy(CAB), force=False)
    # The same document, spelled otherwise (JSON, another key order)
    again = policy_store.apply_policy(
        conn,
        parse_policy('{"rules": [{"require": [{"group": "cab"}], "id": "default"}], "policy": 1}'),
        force=False,
    )

    assert (again.new, again.version) == (False, first.version)
    assert versions(conn)[-1] == first.version.version


def test_a_policy_naming_groups_or_actors_the_registry_does_not_have_is_refused(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    before = versions(conn)
    policy = parse_policy(
        "policy: 1\nrules:\n  - id: default\n    require: [{group: sre}, {actor: sec-officer}]\n"
    )

    with pytest.raises(PolicyError) as refused:
        policy_store.apply_policy(conn, policy, force=False)

    assert refused.value.problems == (
        "rules[0].require[0].group: 'sre' is not a registered group",
        "rules[0].require[1].actor: 'sec-officer' is not a registered actor",
    )
    assert versions(conn) == before


def test_an_unsatisfiable_policy_is_refused_naming_the_rule_the_submitter_and_the_shortfall(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    # Given alice is also a requester: for her, two of cab means alice and one more
    registry.add_role(conn, "alice", "requester")
    before = versions(conn)
    policy = parse_policy(TWO_OF_CAB)

    with pytest.raises(PolicyUnsatisfiable) as refused:
        policy_store.apply_policy(conn, policy, force=False)

    assert [str(s) for s in refused.value.shortfalls] == [
        "rule critical: for submitter alice, step 1 (group cab, 2 approvals) needs 2 distinct "
        "eligible approvers other than alice; only 1 can be matched: bob"
    ]
    assert str(refused.value).startswith("the policy cannot be satisfied by the registry: rule")
    assert versions(conn) == before


def test_a_forced_apply_is_applied_and_recorded_as_forced(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    registry.set_active(conn, "bob", False)

    applied = policy_store.apply_policy(conn, parse_policy(TWO_OF_CAB), force=True)

    assert applied.new and applied.version.forced
    assert applied.forced_past == (
        "rule critical: for an outsider, step 1 (group cab, 2 approvals) needs 2 distinct "
        "eligible approvers; only 1 can be matched: alice; not eligible: bob (inactive)",
        "rule critical: for submitter ci, step 1 (group cab, 2 approvals) needs 2 distinct "
        "eligible approvers other than ci; only 1 can be matched: alice; not eligible: bob "
        "(inactive)",
    )
    assert audit(conn, "policy_applied")[-1][2]["forced"] is True


def test_a_forced_apply_goes_past_unregistered_names_too(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    applied = policy_store.apply_policy(
        conn, parse_policy("policy: 1\nrules:\n  - id: default\n    require: [{group: sre}]\n"),
        force=True,
    )  # fmt: skip

    assert applied.version.forced
    assert applied.forced_past[0] == "rules[0].require[0].group: 'sre' is not a registered group"
    assert "rule default: for an outsider" in applied.forced_past[1]


def test_two_applies_at_once_get_two_versions(
    url: str, conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    # Given another session holding the policy lock in an open transaction
    before = versions(conn)
    with psycopg.connect(url) as holder:
        holder.execute(policy_store.POLICY_LOCK)
        results: list[int] = []

        def apply_in_thread(text: str) -> None:
            with psycopg.connect(url, autocommit=True) as other:
                results.append(
                    policy_store.apply_policy(
                        other, parse_policy(text), force=False
                    ).version.version
                )

        # When two applies start while it holds it, then it commits
        threads = [threading.Thread(target=apply_in_thread, args=(t,)) for t in (CAB, TWO_OF_CAB)]
        for thread in threads:
            thread.start()
        waiting_for_the_lock(conn, 2)
        holder.commit()
        for thread in threads:
            thread.join(timeout=30)

    # Then both were applied, one after the other, as two versions
    start = before[-1] if before else 0
    assert sorted(results) == [start + 1, start + 2]
    assert versions(conn) == [*before, start + 1, start + 2]


def test_a_version_that_does_not_exist_is_a_policy_store_error(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(PolicyStoreError, match="there is no approval policy version 999"):
        policy_store.policy_version(conn, 999)


# --------------------------------------------------------------------------- registry changes


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c, keys: registry.set_active(c, "bob", False), id="deactivate"),
        pytest.param(lambda c, keys: registry.revoke_key(c, keys["bob"]), id="revoke-last-key"),
        pytest.param(lambda c, keys: registry.remove_role(c, "bob", "approver"), id="remove-role"),
        pytest.param(lambda c, keys: registry.remove_group(c, "bob", "cab"), id="remove-group"),
        # bob a requester too: for bob as the submitter, two of cab are bob and one more
        pytest.param(lambda c, keys: registry.add_role(c, "bob", "requester"), id="add-role"),
    ],
)
def test_a_registry_change_that_would_break_the_active_policy_is_refused_and_not_made(
    conn: psycopg.Connection[Any], cab: dict[str, str], change: Any
) -> None:
    # Given two of cab are needed for critical requests, and cab has two approvers
    applied = policy_store.apply_policy(conn, parse_policy(TWO_OF_CAB), force=False)
    registry_before = registry.list_actors(conn)
    audited = conn.execute("SELECT count(*) FROM registry_audit").fetchone()

    # When a change would leave one of them unable to approve
    with pytest.raises(PolicyUnsatisfiable) as refused:
        policy_store.change_registry(conn, lambda: change(conn, cab), force=False)

    # Then it is refused, naming the version, the rule, the submitter and the shortfall
    message = str(refused.value)
    assert message.startswith(
        f"refused: this change would leave approval policy version "
        f"{applied.version.version} unsatisfiable: rule critical: for "
    )
    assert "step 1 (group cab, 2 approvals) needs 2 distinct eligible approvers" in message
    assert message.endswith("(--force makes it anyway)")
    # And nothing changed, nothing was audited
    assert registry.list_actors(conn) == registry_before
    assert conn.execute("SELECT count(*) FROM registry_audit").fetchone() == audited


def test_a_forced_registry_change_is_made_and_audited_with_what_it_broke(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    applied = policy_store.apply_policy(conn, parse_policy(TWO_OF_CAB), force=False)

    done = policy_store.change_registry(
        conn, lambda: registry.set_active(conn, "bob", False), force=True, actor_id="bob"
    )

    assert done.result.active is False
    assert done.version == applied.version.version
    assert {s.submitter for s in done.forced_past} == {None, "ci"}
    ((actor_id, key_id, details, _),) = audit(conn, "policy_check_forced")
    assert (actor_id, key_id) == ("bob", None)
    assert details == {
        "policy_version": applied.version.version,
        "shortfalls": [str(s) for s in done.forced_past],
    }
    # And the deactivation itself is audited by the registry, as any other
    assert audit(conn, "actor_updated")[-1][2] == {"active": {"from": True, "to": False}}


def test_a_registry_change_the_policy_survives_is_made(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    policy_store.apply_policy(conn, parse_policy(CAB), force=False)

    done = policy_store.change_registry(
        conn, lambda: registry.set_active(conn, "bob", False), force=False
    )

    assert (done.result.active, done.forced_past) == (False, ())
    assert audit(conn, "policy_check_forced") == []


def test_without_a_policy_a_registry_change_is_not_checked(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    done = policy_store.change_registry(
        conn, lambda: registry.set_active(conn, "bob", False), force=False
    )

    assert (done.version, done.result.active) == (None, False)


def test_a_policy_already_unsatisfiable_can_be_mended_one_change_at_a_time(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    # Given a policy forced past the check: it needs four of cab, which has two
    four = TWO_OF_CAB.replace("min_approvals: 2", "min_approvals: 4")
    apply(conn, four, force=True)

    # When a third member joins cab, which still leaves the rule short
    add(conn, "carol", ["approver"])
    grouped = policy_store.change_registry(
        conn, lambda: registry.add_group(conn, "carol", "cab"), force=False
    )

    # Then the change is made: it breaks nothing that held before
    assert grouped.forced_past == ()
    assert registry.show_actor(conn, "carol").groups == ("cab",)
    assert policy_store.active_policy(conn) is not None


def test_two_registry_changes_at_once_are_judged_one_after_the_other(
    url: str, conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    # Given one of cab suffices, and cab has two approvers: either may leave, not both
    apply(conn, CAB)
    outcome: list[BaseException | None] = []

    def deactivate_bob() -> None:
        with psycopg.connect(url, autocommit=True) as other:
            try:
                policy_store.change_registry(
                    other, lambda: registry.set_active(other, "bob", False), force=False
                )
                outcome.append(None)
            except PolicyUnsatisfiable as exc:
                outcome.append(exc)

    # When alice is deactivated in a transaction that holds the lock while bob's
    # deactivation is asked for in another session
    with psycopg.connect(url) as first:
        first.execute("SELECT 1")  # a transaction open: the change is a savepoint of it
        policy_store.change_registry(
            first, lambda: registry.set_active(first, "alice", False), force=False
        )
        thread = threading.Thread(target=deactivate_bob)
        thread.start()
        waiting_for_the_lock(conn, 1)
        first.commit()
    thread.join(timeout=30)

    # Then bob's change was judged after alice's and refused
    (refused,) = outcome
    assert isinstance(refused, PolicyUnsatisfiable)
    assert "rule default: for an outsider" in str(refused)
    assert registry.show_actor(conn, "bob").active is True


def test_a_registry_change_against_an_unreadable_active_policy_is_refused(
    conn: psycopg.Connection[Any], cab: dict[str, str]
) -> None:
    # Given an active version whose stored document this release cannot read
    conn.execute(
        "INSERT INTO policy_versions (version, sha256, document) VALUES (1, %s, %s)",
        ("0" * 64, Jsonb({"policy": 2, "rules": []})),
    )

    with pytest.raises(PolicyStoreError, match="approval policy version 1 cannot be read"):
        policy_store.change_registry(
            conn, lambda: registry.set_active(conn, "bob", False), force=True
        )

    assert registry.show_actor(conn, "bob").active is True
