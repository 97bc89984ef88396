"""Forged histories: what whoever holds the worker's database role (or the database itself)
can write to make an unapproved request look approved, and how ``verify`` finds it.

Every forgery is thorough: its decisions are the ones the core gives for the command it
pretends was applied, chained after the request's head, with the row moved in the same
transaction (so the database's guard accepts it). What it cannot make right is what the
kept command, the registry's history or the policy then in effect imply: re-execution
finds that. Each test works in a private database of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from governance.commands import parse_command
from governance.model import MutationRequest
from governance.policy import ActivePolicy
from governance.rules import Applied, decide
from producer.audit import (
    Finding,
    Kind,
    export_request,
    read_request_history,
    verify_export,
    verify_request,
)
from producer.keys import SigningKey
from producer.reexecution import policy_versions, read_policy_rows
from producer.signing import sign_command
from tests.conftest import migrated_database
from tests.integration.test_trust_schema import TRIGGER_REFUSAL
from tests.support import identities
from tests.support.commands import command, due_soon, new_id, submit
from tests.support.forgery import as_worker_role, forge_revision, unsigned
from tests.support.identities import without_signature
from tests.support.policies import apply_policy
from tests.support.services import owner_bypassing_guards
from tests.support.signed import apply_command
from tests.support.tampering import cut_short
from worker import registry
from worker.expiry import expire_command

pytestmark = pytest.mark.integration

#: A policy that demands one grant of the ``cab`` group for every request.
CAB_POLICY = """\
policy: 1
rules:
  - id: cab
    description: Every change needs the change advisory board.
    require:
      - group: cab
        min_approvals: 1
"""


@pytest.fixture
def url(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of this test alone."""
    with migrated_database(postgres_server_url) as database_url:
        yield database_url


@pytest.fixture
def owner(url: str) -> Iterator[psycopg.Connection[Any]]:
    """The database's owner (who applies genuine commands, and administers the registry)."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def worker(owner: psycopg.Connection[Any], url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the workers' database role."""
    with as_worker_role(owner, url) as conn:
        yield conn


def pending_group_request(conn: psycopg.Connection[Any], url: str) -> str:
    """A request of ``requester`` waiting for one grant of the ``cab`` group, whose only
    member is ``approver``."""
    identities.register(url, "requester", roles=["requester"])
    identities.register(url, "approver", roles=["approver"], groups=["cab"])
    request_id = new_id()
    requirement = {"approval_id": "cab", "approver_group": "cab", "min_approvals": 1}
    outcome = apply_command(conn, submit(request_id, actor="requester", requirements=[requirement]))
    assert outcome.applied, outcome.event
    return request_id


def pending_request(conn: psycopg.Connection[Any]) -> str:
    """A request submitted pending, with no approval requirement (an operator may approve)."""
    request_id = new_id()
    assert apply_command(conn, submit(request_id, initial_status="pending")).applied
    return request_id


def substance(findings: Any, request_id: str) -> list[Finding]:
    assert findings is not None
    return [f for f in findings.failures if f.request_id == request_id and f.kind is Kind.SUBSTANCE]


def status_of(conn: psycopg.Connection[Any], request_id: str) -> tuple[str, int]:
    row = conn.execute(
        "SELECT status, revision FROM mutation_requests WHERE request_id = %s", (request_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def grant_forged_from_rejection(worker: psycopg.Connection[Any], request_id: str) -> dict[str, Any]:
    """As the worker role: the approver's genuine signed rejection (never applied) kept as
    the proof of a grant and an approval at the next revision; the rejection."""
    rejection = identities.sign(
        command("reject_requirement", request_id, 1, actor="approver", args={"approval_id": "cab"})
    )
    forge_revision(
        worker,
        request_id,
        kept=rejection,
        key_id=identities.key_for("approver").key_id,
        applied={**unsigned(rejection), "type": "approve_requirement"},
        groups=frozenset({"cab"}),
    )
    return rejection


# --------------------------------------------------------------------------- a status by hand


def test_the_worker_role_cannot_set_a_pending_request_approved_by_hand(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given a request waiting for its requirement
    request_id = pending_group_request(owner, url)

    # When the worker role sets it approved with no decision behind it
    # Then the database refuses it
    with pytest.raises(TRIGGER_REFUSAL, match="without a new revision"):
        worker.execute(
            "UPDATE mutation_requests SET status = 'approved', pending_reason = NULL"
            " WHERE request_id = %s",
            (request_id,),
        )
    assert status_of(owner, request_id) == ("pending", 1)


def test_a_status_set_by_the_owner_with_the_guards_off_fails_naming_the_status(
    owner: psycopg.Connection[Any], url: str
) -> None:
    # Given a pending request the owner sets approved with the guards off
    request_id = pending_group_request(owner, url)
    with owner_bypassing_guards(owner):
        owner.execute(
            "UPDATE mutation_requests SET status = 'approved', pending_reason = NULL"
            " WHERE request_id = %s",
            (request_id,),
        )

    # When it is verified
    findings = verify_request(owner, request_id)

    # Then re-execution names the revision and the status it gives
    messages = [(f.revision, f.message) for f in substance(findings, request_id)]
    assert (1, "the stored request's status is 'approved', re-execution gives 'pending'") in (
        messages
    )


# --------------------------------------------------------------------------- a rejection as proof


def test_a_signed_rejection_kept_as_the_proof_of_an_approval_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given, as the worker role, a grant and an approval whose kept command is the
    # approver's genuine signed rejection (the guard accepts: the row is accounted for)
    request_id = pending_group_request(owner, url)
    grant_forged_from_rejection(worker, request_id)
    assert status_of(owner, request_id) == ("approved", 2)

    # When it is verified
    findings = verify_request(owner, request_id)

    # Then the form holds (signature, chain, head) but re-execution names revision 2 and
    # what differs: the kept command rejects
    assert findings is not None
    assert {f.kind for f in findings.failures} == {Kind.SUBSTANCE}
    [found] = substance(findings, request_id)
    assert found.revision == 2
    assert found.message.startswith("decision 2/1 differs: ")
    assert "type is 'granted', re-execution gives 'rejected'" in found.message


def test_an_export_of_a_rejection_kept_as_an_approval_fails_too(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given that forgery, exported (and carried as JSON text)
    request_id = pending_group_request(owner, url)
    grant_forged_from_rejection(worker, request_id)
    document = json.loads(json.dumps(export_request(owner, request_id)))

    # When the export is verified with no database
    findings = verify_export(document)

    # Then it fails at revision 2 by re-execution
    assert [(f.kind, f.revision) for f in findings.failures] == [(Kind.SUBSTANCE, 2)]


def test_a_rejection_rewritten_as_an_approval_by_the_owner_fails_with_every_hash_recomputed(
    owner: psycopg.Connection[Any], url: str
) -> None:
    # Given a requirement genuinely rejected, whose revision the owner then replaces (guards
    # off) by a grant and an approval kept with the very same signed rejection, every hash
    # and the head recomputed
    request_id = pending_group_request(owner, url)
    rejection = identities.sign(
        command("reject_requirement", request_id, 1, actor="approver", args={"approval_id": "cab"})
    )
    assert apply_command(owner, rejection).applied
    cut_short(owner, request_id, 1)
    forge_revision(
        owner,
        request_id,
        kept=rejection,
        key_id=identities.key_for("approver").key_id,
        applied={**unsigned(rejection), "type": "approve_requirement"},
        groups=frozenset({"cab"}),
    )
    assert status_of(owner, request_id) == ("approved", 2)

    # When it is verified
    findings = verify_request(owner, request_id)

    # Then re-execution finds it (no anchor needed)
    assert [f.revision for f in substance(findings, request_id)] == [2]


# --------------------------------------------------------------------------- unsigned decisions


def test_an_unsigned_system_expiry_kept_for_a_grant_and_an_approval_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given, as the worker role, an unsigned "expiry" of the system actor kept as the proof
    # of a grant and an approval
    request_id = pending_group_request(owner, url)
    expiry = expire_command(request_id, 1)
    forge_revision(
        worker,
        request_id,
        kept=expiry,
        key_id=None,
        applied={**expiry, "type": "approve_requirement", "args": {"approval_id": "cab"}},
        actor_name="System",
        groups=frozenset({"cab"}),
    )
    assert status_of(owner, request_id) == ("approved", 2)

    # When it is verified (no flag)
    findings = verify_request(owner, request_id)

    # Then re-execution refuses the expiry: the request was not past its expiry
    [found] = substance(findings, request_id)
    assert found.revision == 2
    assert "unsigned expiry of a request that was not pending past its expiry" in found.message


def test_an_unsigned_expiry_of_a_due_request_kept_for_an_approval_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given a request due for expiry, and, as the worker role, the system's expiry kept as
    # the proof of a grant and an approval
    identities.register(url, "requester", roles=["requester"])
    identities.register(url, "approver", roles=["approver"], groups=["cab"])
    request_id = new_id()
    requirement = {"approval_id": "cab", "approver_group": "cab", "min_approvals": 1}
    payload = submit(
        request_id, actor="requester", requirements=[requirement], expires_at=due_soon()
    )
    assert apply_command(owner, payload).applied
    time.sleep(0.6)
    expiry = expire_command(request_id, 1)
    forge_revision(
        worker,
        request_id,
        kept=expiry,
        key_id=None,
        applied={**expiry, "type": "approve_requirement", "args": {"approval_id": "cab"}},
        actor_name="System",
        groups=frozenset({"cab"}),
    )

    # When it is verified
    findings = verify_request(owner, request_id)

    # Then re-execution expires it where the decisions grant
    [found] = substance(findings, request_id)
    assert found.revision == 2
    assert "re-executed, the command gives" in found.message or "differs" in found.message


def test_a_genuine_due_expiry_holds_even_with_signatures_required(
    owner: psycopg.Connection[Any],
) -> None:
    # Given a pending request expired by the worker once it was due
    request_id = new_id()
    assert apply_command(owner, submit(request_id, initial_status="pending", expires_at=due_soon()))
    time.sleep(0.6)
    assert apply_command(owner, expire_command(request_id, 1)).applied

    # When it is verified with signatures required
    findings = verify_request(owner, request_id, require_signed=True)

    # Then it holds, the expiry listed as unsigned
    assert findings is not None and findings.ok, findings.lines()
    assert [f.revision for f in findings.unsigned] == [2]


# --------------------------------------------------------------------------- the registry's history


def test_a_grant_stays_valid_after_its_approver_left_the_group_and_was_deactivated(
    owner: psycopg.Connection[Any], url: str
) -> None:
    # Given a group requirement granted (and so completed) by a member of the group
    request_id = pending_group_request(owner, url)
    grant = command("approve_requirement", request_id, 1, actor="approver")
    grant["args"] = {"approval_id": "cab"}
    assert apply_command(owner, grant).applied

    # When the approver later leaves the group and is deactivated
    registry.remove_group(owner, "approver", "cab")
    registry.set_active(owner, "approver", False)

    # Then the history still verifies: the grant was valid when it was made
    findings = verify_request(owner, request_id)
    assert findings is not None and findings.ok, findings.lines()
    assert status_of(owner, request_id) == ("approved", 2)


def test_a_decision_claiming_a_role_its_actor_was_only_given_afterwards_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given a requester's signed operator command (approve) the worker would refuse,
    # appended as applied by the worker role
    identities.register(url, "mallory", roles=["requester"])
    request_id = pending_request(owner)
    approve = identities.sign(command("approve", request_id, 1, actor="mallory"))
    forge_revision(worker, request_id, kept=approve, key_id=identities.key_for("mallory").key_id)
    assert status_of(owner, request_id) == ("approved", 2)

    # When the registry gives mallory the operator role afterwards
    registry.add_role(owner, "mallory", "operator")

    # Then the decision fails: mallory was no operator at the decision time
    [found] = substance(verify_request(owner, request_id), request_id)
    assert found.revision == 2
    assert "forbidden" in found.message and "operator" in found.message


def test_a_command_signed_with_a_key_revoked_before_the_decision_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given an operator's signed approve, whose key is then revoked, appended as applied
    # by the worker role after the revocation
    identities.register(url, "olivia", roles=["operator"])
    request_id = pending_request(owner)
    approve = identities.sign(command("approve", request_id, 1, actor="olivia"))
    registry.revoke_key(owner, identities.key_for("olivia").key_id)
    forge_revision(worker, request_id, kept=approve, key_id=identities.key_for("olivia").key_id)

    # When it is verified
    [found] = substance(verify_request(owner, request_id), request_id)

    # Then the kept command would have been refused: its key was revoked
    assert found.revision == 2
    assert "unauthenticated" in found.message and "revoked" in found.message


def test_a_decision_dated_after_the_role_was_given_is_refused_by_the_database(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given a requester's signed operator command appended by the worker role, dated an hour
    # ahead (after the role it needs is given)
    identities.register(url, "mallory", roles=["requester"])
    request_id = pending_request(owner)
    approve = identities.sign(command("approve", request_id, 1, actor="mallory"))
    clock = owner.execute("SELECT clock_timestamp()").fetchone()
    assert clock is not None

    # When it is written, Then the database refuses a decision its clock has not reached
    with pytest.raises(TRIGGER_REFUSAL, match="the clock has not reached"):
        forge_revision(
            worker,
            request_id,
            kept=approve,
            key_id=identities.key_for("mallory").key_id,
            occurred_at=clock[0] + timedelta(hours=1),
        )
    assert status_of(owner, request_id) == ("pending", 1)


def test_a_decision_dated_before_a_key_revocation_is_refused_by_the_database(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given an operator's signed approve, captured before its key was revoked
    identities.register(url, "olivia", roles=["operator"])
    request_id = pending_request(owner)
    approve = identities.sign(command("approve", request_id, 1, actor="olivia"))
    clock = owner.execute("SELECT clock_timestamp()").fetchone()
    assert clock is not None
    registry.revoke_key(owner, identities.key_for("olivia").key_id)

    # When the worker role appends it dated before the revocation
    # Then the database refuses it: a registry change is stamped after that time
    with pytest.raises(TRIGGER_REFUSAL, match="before a registry change"):
        forge_revision(
            worker,
            request_id,
            kept=approve,
            key_id=identities.key_for("olivia").key_id,
            occurred_at=clock[0],
        )
    assert status_of(owner, request_id) == ("pending", 1)


def test_a_decision_dated_at_the_very_instant_of_a_key_revocation_is_refused_by_the_database(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given an operator's signed approve, whose key is then revoked
    identities.register(url, "olivia", roles=["operator"])
    request_id = pending_request(owner)
    approve = identities.sign(command("approve", request_id, 1, actor="olivia"))
    registry.revoke_key(owner, identities.key_for("olivia").key_id)
    stamped = owner.execute(
        "SELECT at FROM registry_audit WHERE action = 'key_revoked' AND key_id = %s",
        (identities.key_for("olivia").key_id,),
    ).fetchone()
    assert stamped is not None

    # When the worker role appends it dated at the revocation's own stamp (which
    # re-execution would judge with the key as it stood just before)
    # Then the database refuses it
    with pytest.raises(TRIGGER_REFUSAL, match="before a registry change"):
        forge_revision(
            worker,
            request_id,
            kept=approve,
            key_id=identities.key_for("olivia").key_id,
            occurred_at=stamped[0],
        )
    assert status_of(owner, request_id) == ("pending", 1)


# --------------------------------------------------------------------------- the policy


def test_a_submit_claiming_fewer_requirements_than_the_policy_in_effect_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given the open policy (version 1) replaced by one demanding the cab's grant, and, as
    # the worker role, a genuine signed submit appended as the open policy would decide it
    identities.register(url, "requester", roles=["requester"])
    [open_policy] = [v for v in policy_versions(read_policy_rows(owner)) if v.version == 1]
    apply_policy(url, CAB_POLICY)
    request_id = new_id()
    signed = identities.sign(submit(request_id, actor="requester"))
    forge_revision(
        worker,
        request_id,
        kept=signed,
        key_id=identities.key_for("requester").key_id,
        policy=ActivePolicy(version=1, policy=open_policy.policy),
    )
    assert status_of(owner, request_id) == ("created", 1)

    # When it is verified
    [found] = substance(verify_request(owner, request_id), request_id)

    # Then re-execution under the version in effect gives other decisions
    assert found.revision == 1
    assert "re-executed" in found.message or "differs" in found.message


def test_an_approval_whose_row_swaps_what_is_to_be_changed_fails(
    owner: psycopg.Connection[Any],
) -> None:
    # Given, as the database's owner (the worker role may not change what a request asks
    # for), an operator's genuine signed approve applied as the core gives it, the row moved
    # to approved in the same transaction but naming another state and another intent than
    # the request submitted
    request_id = pending_request(owner)
    history = read_request_history(owner, request_id)
    assert history is not None
    intent = {**history.request["intent"], "operation_name": "drop-everything"}
    approve = identities.sign(command("approve", request_id, 1))
    forge_revision(
        owner,
        request_id,
        kept=approve,
        key_id=identities.key_for("operator").key_id,
        row_changes={"state_id": "production-db", "intent": intent},
    )
    assert status_of(owner, request_id) == ("approved", 2)

    # When it is verified
    found = substance(verify_request(owner, request_id), request_id)

    # Then the row's state and intent are named: they are not what was approved
    assert [f.revision for f in found] == [2, 2]
    assert found[0].message == (
        "the stored request's state_id is 'production-db', re-execution gives 'state-1'"
    )
    assert found[1].message.startswith("the stored request's intent is ")


# --------------------------------------------------------------------------- the history's start


def test_a_request_whose_first_revision_has_no_kept_command_fails_in_a_signed_deployment(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any]
) -> None:
    # Given, as the worker role, a request written whole: its submit as if before the chain
    # existed (no chain hash, no kept command), then approved by an unsigned "expiry" of the
    # system actor (so nothing is left to re-execute from revision 1)
    request_id = new_id()
    expiry = expire_command(request_id, 1)
    with worker.transaction():
        forge_revision(
            worker,
            request_id,
            kept=submit(request_id, initial_status="pending"),
            key_id=None,
            legacy=True,
        )
        forge_revision(
            worker,
            request_id,
            kept=expiry,
            key_id=None,
            applied={**expiry, "type": "approve"},
            actor_name="System",
        )
    assert status_of(owner, request_id) == ("approved", 2)

    # When it is verified (no flag)
    findings = verify_request(owner, request_id)

    # Then it fails: nothing before revision 2 can be re-executed, so nothing is proved
    [found] = substance(findings, request_id)
    assert found.revision == 2 and found.command_id == expiry["command_id"]
    assert found.message.startswith("revision 1 has no kept command")


# --------------------------------------------------------------------------- other requests, times


def test_a_supersede_by_a_request_that_did_not_exist_then_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any]
) -> None:
    # Given, as the worker role, an operator's signed supersede of a request by one that
    # does not exist yet, appended as applied (as if the successor had been there)
    request_id, successor_id = pending_request(owner), new_id()
    successor = identities.sign(submit(successor_id, initial_status="pending"))
    clock = owner.execute("SELECT clock_timestamp()").fetchone()
    assert clock is not None
    created = decide(None, parse_command(unsigned(successor)), clock[0])
    assert isinstance(created, Applied)
    supersede = identities.sign(
        command("supersede", request_id, 1, args={"superseding_request_id": successor_id})
    )
    forge_revision(
        worker,
        request_id,
        kept=supersede,
        key_id=identities.key_for("operator").key_id,
        superseding=created.request,
    )
    # And the successor submitted afterwards
    assert apply_command(owner, successor).applied

    # When it is verified
    [found] = substance(verify_request(owner, request_id), request_id)

    # Then re-execution refuses the supersede: its successor did not exist at that time
    assert found.revision == 2
    assert "would have been refused" in found.message


def test_a_kept_command_of_another_request_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any]
) -> None:
    # Given an operator's genuine signed approve of one request, kept by the worker role as
    # the proof of another request's approval
    request_id, other_id = pending_request(owner), pending_request(owner)
    approve = identities.sign(command("approve", other_id, 1))
    forge_revision(
        worker,
        request_id,
        kept=approve,
        key_id=identities.key_for("operator").key_id,
        applied={**unsigned(approve), "request_id": request_id},
    )
    assert status_of(owner, request_id) == ("approved", 2)

    # When it is verified
    findings = verify_request(owner, request_id)

    # Then it fails at revision 2: the kept command names the other request
    [found] = substance(findings, request_id)
    assert (found.revision, found.message) == (2, f"the kept command is for request {other_id}")


def test_a_decision_dated_before_the_revision_it_follows_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given a requirement needing two of the cab, one granted; and, as the worker role, the
    # second member's genuine signed grant appended dated before the first
    identities.register(url, "requester", roles=["requester"])
    for approver in ("approver", "second"):
        identities.register(url, approver, roles=["approver"], groups=["cab"])
    clock = owner.execute("SELECT clock_timestamp()").fetchone()
    assert clock is not None
    request_id = new_id()
    requirement = {"approval_id": "cab", "approver_group": "cab", "min_approvals": 2}
    assert apply_command(owner, submit(request_id, actor="requester", requirements=[requirement]))
    first = command("approve_requirement", request_id, 1, actor="approver")
    first["args"] = {"approval_id": "cab"}
    assert apply_command(owner, first).applied
    second = command("approve_requirement", request_id, 2, actor="second")
    second["args"] = {"approval_id": "cab"}
    forge_revision(
        worker,
        request_id,
        kept=identities.sign(second, issued_at=clock[0]),
        key_id=identities.key_for("second").key_id,
        groups=frozenset({"cab"}),
        occurred_at=clock[0],
    )
    assert status_of(owner, request_id) == ("approved", 3)

    # When it is verified
    [found] = substance(verify_request(owner, request_id), request_id)

    # Then the out-of-order time is named
    assert (found.revision, found.message) == (3, "decided before the revision it follows")


def test_a_second_grant_by_the_same_approver_counted_towards_two_fails(
    owner: psycopg.Connection[Any], worker: psycopg.Connection[Any], url: str
) -> None:
    # Given a requirement needing two of the cab, granted once by the approver; and, as the
    # worker role, the approver's second signed grant appended as if the first had been
    # another member's, the row naming the approver's grant twice
    identities.register(url, "requester", roles=["requester"])
    identities.register(url, "approver", roles=["approver"], groups=["cab"])
    request_id = new_id()
    requirement = {"approval_id": "cab", "approver_group": "cab", "min_approvals": 2}
    assert apply_command(owner, submit(request_id, actor="requester", requirements=[requirement]))
    grant = command("approve_requirement", request_id, 1, actor="approver")
    grant["args"] = {"approval_id": "cab"}
    assert apply_command(owner, grant).applied
    again = identities.sign({**grant, "command_id": new_id("cmd"), "expected_revision": 2})

    def as_if_another_granted(request: MutationRequest) -> MutationRequest:
        [cab] = request.approval_requirements
        grants = tuple(replace(g, actor_id="someone") for g in cab.grants)
        return replace(request, approval_requirements=(replace(cab, grants=grants),))

    def naming_the_approver_twice(row: dict[str, Any]) -> None:
        for granted in row["approval_requirements"][0]["grants"]:
            granted["actor_id"] = "approver"

    forge_revision(
        worker,
        request_id,
        kept=again,
        key_id=identities.key_for("approver").key_id,
        groups=frozenset({"cab"}),
        pretend=as_if_another_granted,
        edit_row=naming_the_approver_twice,
    )
    assert status_of(owner, request_id) == ("approved", 3)

    # When it is verified
    [found] = substance(verify_request(owner, request_id), request_id)

    # Then re-execution refuses the second grant: one actor grants a requirement once
    assert found.revision == 3
    assert "would have been refused (approval_not_allowed" in found.message


# --------------------------------------------------------------------------- exports and trust


def trusted_set(*actor_ids: str) -> dict[str, dict[str, Any]]:
    """The keys of ``actor_ids`` as an operator pins them (``--keys``), by key_id."""
    keys = [identities.key_for(actor_id) for actor_id in actor_ids]
    return {
        key.key_id: {
            "key_id": key.key_id,
            "actor_id": key.actor_id,
            "public_key": key.public_key_b64,
        }
        for key in keys
    }


def approved_export(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """A request submitted and approved by the operator, exported (as JSON text carries it)."""
    request_id = pending_request(conn)
    assert apply_command(conn, command("approve", request_id, 1)).applied
    document: dict[str, Any] = json.loads(json.dumps(export_request(conn, request_id)))
    return document


def test_an_export_checked_against_a_trusted_set_that_lacks_a_key_fails_naming_it(
    owner: psycopg.Connection[Any],
) -> None:
    # Given an approved request's export
    document = approved_export(owner)

    # When it is checked against a trusted set without the operator's key
    findings = verify_export(document, trusted_keys=trusted_set("submitter"))

    # Then it fails naming that key
    operator = identities.key_for("operator").key_id
    assert [(f.kind, f.message) for f in findings.failures] == [
        (Kind.KEY, f"key {operator} of 'operator' is not in the trusted key set")
    ]


def test_an_export_checked_against_the_right_trusted_set_holds(
    owner: psycopg.Connection[Any],
) -> None:
    document = approved_export(owner)

    findings = verify_export(document, trusted_keys=trusted_set("submitter", "operator"))

    assert findings.ok, findings.lines()


def test_an_export_whose_key_is_swapped_for_a_forgers_fails_against_the_trusted_set(
    owner: psycopg.Connection[Any],
) -> None:
    # Given an export whose operator key (and its registry row) is replaced by a forger's,
    # the approval re-signed with it: every check on the export's own word holds
    document = approved_export(owner)
    forger = SigningKey(
        actor_id="operator", key_id=identities.key_for("operator").key_id, seed=b"\x07" * 32
    )
    for key in document["keys"]:
        if key["key_id"] == forger.key_id:
            key["public_key"] = forger.public_key_b64
    for row in document["registry"]:
        if row["action"] == "key_added" and row["key_id"] == forger.key_id:
            row["details"]["public_key"] = forger.public_key_b64
    [proof] = [p for p in document["proofs"] if p["revision"] == 2]
    proof["signed_command"] = json.dumps(
        sign_command(
            without_signature(json.loads(proof["signed_command"])), forger, audience="governance"
        )
    )
    assert verify_export(document).ok

    # When it is checked against the trusted set
    findings = verify_export(document, trusted_keys=trusted_set("submitter", "operator"))

    # Then the swapped key is named
    assert [f.message for f in findings.failures] == [
        f"key {forger.key_id} of 'operator' is not the trusted key of that id"
    ]
