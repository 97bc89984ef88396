"""Verifying histories the worker wrote: the chain and the kept signed commands read back
from the database, an export checked away from it, and anchors against whoever holds it.

Every test that alters a history does so in a private database of its own, so no other
test ever meets a history it did not write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rfc8785
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from governance.proof import b64url_encode, chain_hash, chained_decision
from producer.audit import (
    AnchorError,
    Kind,
    check_anchor,
    export_request,
    read_all_request_ids,
    read_request_history,
    verify_export,
    verify_request,
    write_anchor,
)
from producer.keys import SigningKey
from tests.conftest import migrated_database
from tests.support import identities
from tests.support.commands import command, new_id, submit
from tests.support.signed import DEVELOPMENT, apply_command
from worker.expiry import expire_command

pytestmark = pytest.mark.integration

#: The operator public key the anchor checks pin (as --anchor-key does).
OPERATOR = [identities.key_for("operator").public_key_b64]


@pytest.fixture
def private_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated database of this test alone, its actors registered as they sign."""
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def private(private_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(private_url, autocommit=True) as conn:
        yield conn


def approved_request(conn: psycopg.Connection[Any]) -> str:
    """A request submitted pending (revision 1) and approved by the operator (revision 2)."""
    request_id = new_id()
    for payload in (
        submit(request_id, initial_status="pending"),
        command("approve", request_id, 1, reason="checked the diff"),
    ):
        outcome = apply_command(conn, payload)
        assert outcome.applied, outcome.event
    return request_id


def tamper(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> None:
    """Change history as someone holding the database can: with its guard switched off."""
    conn.execute("ALTER TABLE request_decisions DISABLE TRIGGER USER")
    try:
        conn.execute(query, params)
    finally:
        conn.execute("ALTER TABLE request_decisions ENABLE TRIGGER USER")


def rechain(conn: psycopg.Connection[Any], request_id: str) -> None:
    """Recompute every chain hash of the request and its head, as a thorough forger would."""
    rows = conn.execute(
        "SELECT id, revision, position, command_id, category, type, actor, reason, metadata,"
        " occurred_at FROM request_decisions WHERE request_id = %s ORDER BY revision, position",
        (request_id,),
    ).fetchall()
    previous = None
    conn.execute("ALTER TABLE request_decisions DISABLE TRIGGER USER")
    try:
        for row_id, revision, position, command_id, *fields in rows:
            names = ("category", "type", "actor", "reason", "metadata", "occurred_at")
            decision = dict(zip(names, fields, strict=True))
            previous = chain_hash(
                previous, chained_decision(request_id, revision, position, command_id, decision)
            )
            conn.execute(
                "UPDATE request_decisions SET chain_hash = %s WHERE id = %s", (previous, row_id)
            )
        # The owner may switch off the guard that refuses a row its decisions do not
        # account for: against the owner only an anchor proves anything.
        conn.execute("ALTER TABLE mutation_requests DISABLE TRIGGER USER")
        conn.execute(
            "UPDATE mutation_requests SET chain_head = %s WHERE request_id = %s",
            (previous, request_id),
        )
    finally:
        conn.execute("ALTER TABLE request_decisions ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE mutation_requests ENABLE TRIGGER USER")


def failures_of(findings: Any, request_id: str) -> list[tuple[Kind, int | None, int | None]]:
    return [
        (f.kind, f.revision, f.position) for f in findings.failures if f.request_id == request_id
    ]


# --------------------------------------------------------------------------- what was written


def test_a_history_the_worker_wrote_verifies(db: psycopg.Connection[Any]) -> None:
    # Given a request submitted and approved through the guarded path, both signed
    request_id = approved_request(db)

    # When its history is read back
    history = read_request_history(db, request_id)

    # Then every decision is chained, every revision's signed command is kept, and it holds
    assert history is not None
    assert [d["revision"] for d in history.decisions][-1] == history.request["revision"] == 2
    assert history.request["chain_head"] == history.decisions[-1]["chain_hash"]
    assert all(d["chain_hash"] for d in history.decisions)
    assert [(p["revision"], p["key_id"]) for p in history.proofs] == [
        (1, identities.key_for("submitter").key_id),
        (2, identities.key_for("operator").key_id),
    ]
    assert set(history.keys) == {p["key_id"] for p in history.proofs}
    findings = history.verify(require_signed=True)
    assert findings.ok, findings.lines()
    assert (findings.requests, findings.decisions) == (1, len(history.decisions))


def test_unsigned_decisions_are_listed_and_fail_only_when_signatures_are_required(
    db: psycopg.Connection[Any],
) -> None:
    # Given a request submitted in development mode, then expired by the worker itself
    request_id = new_id()
    assert apply_command(db, submit(request_id, initial_status="pending"), DEVELOPMENT).applied
    assert apply_command(db, expire_command(request_id, 1)).applied

    # When it is verified
    findings = verify_request(db, request_id)
    strict = verify_request(db, request_id, require_signed=True)

    # Then it holds, each decision listed as unsigned, and fails with signatures required
    assert findings is not None and findings.ok, findings.lines()
    assert findings.unsigned and {f.kind for f in findings.items} == {Kind.UNSIGNED}
    messages = {(f.revision, f.message) for f in findings.unsigned}
    assert (1, "no signature (applied in development mode)") in messages
    assert (2, "no signature (the system actor's expiry)") in messages
    assert strict is not None and not strict.ok
    assert all(line.startswith("unsigned: ") for line in strict.lines())


def test_numbers_jsonb_respells_still_verify(db: psycopg.Connection[Any]) -> None:
    # jsonb spells numbers its own way (1.0 as 1.0, 1.5e-7 as 0.00000015); a large whole
    # float it would read back as an integer RFC 8785 cannot spell is refused by validation
    request_id = new_id()
    payload = submit(request_id, initial_status="pending")
    payload["metadata"] = {"large": 1e20}
    refused = apply_command(db, payload)
    assert refused.event["rejection"]["code"] == "invalid_command"
    assert refused.event["rejection"]["message"].startswith("metadata.large: ")
    payload = submit(request_id, initial_status="pending")
    payload["metadata"] = {"small": 1.5e-7, "nested": [1.0, -0.0, 2**53 - 1], "big": 1.5e15}
    assert apply_command(db, payload).applied

    findings = verify_request(db, request_id)

    assert findings is not None and findings.ok, findings.lines()
    document = json.loads(json.dumps(export_request(db, request_id)))
    assert verify_export(document).ok


def test_no_such_request_has_no_history(db: psycopg.Connection[Any]) -> None:
    assert read_request_history(db, new_id()) is None
    assert verify_request(db, new_id()) is None


def test_every_request_id_is_read_a_page_at_a_time(private: psycopg.Connection[Any]) -> None:
    request_ids = sorted(approved_request(private) for _ in range(3))

    assert list(read_all_request_ids(private, page_size=2)) == request_ids
    assert list(read_all_request_ids(private, page_size=3)) == request_ids


def test_the_readers_leave_a_callers_transaction_as_it_was(private_url: str) -> None:
    with psycopg.connect(private_url) as setup:
        setup.autocommit = True
        request_id = approved_request(setup)
    with psycopg.connect(private_url, row_factory=dict_row) as conn:
        conn.execute("SELECT 1")  # the caller's own transaction is open
        assert verify_request(conn, request_id) is not None
        assert list(read_all_request_ids(conn)) == [request_id]
        assert conn.info.transaction_status is TransactionStatus.INTRANS


# --------------------------------------------------------------------------- alterations


def test_an_updated_reason_is_named(private: psycopg.Connection[Any]) -> None:
    # Given a verified history whose approval reason is then rewritten in the database
    request_id = approved_request(private)
    tamper(
        private,
        "UPDATE request_decisions SET reason = 'nobody looked' "
        "WHERE request_id = %s AND revision = 2",
        (request_id,),
    )

    # When it is verified
    findings = verify_request(private, request_id)

    # Then the decision is named: its chain hash and its signed command disagree with it
    assert findings is not None and not findings.ok
    assert set(failures_of(findings, request_id)) == {(Kind.PROOF, 2, 1), (Kind.CHAIN, 2, 1)}


def test_a_deleted_decision_is_found(private: psycopg.Connection[Any]) -> None:
    request_id = approved_request(private)
    tamper(
        private,
        "DELETE FROM request_decisions WHERE request_id = %s AND revision = 1",
        (request_id,),
    )

    findings = verify_request(private, request_id)

    assert findings is not None
    assert (Kind.ORDER, 2, 1) in failures_of(findings, request_id)
    assert (Kind.CHAIN, 2, 1) in failures_of(findings, request_id)


# --------------------------------------------------------------------------- export


def test_an_export_verifies_with_no_database_and_not_once_edited(
    db: psycopg.Connection[Any],
) -> None:
    # Given a request's history exported (and carried as JSON text)
    request_id = approved_request(db)
    document = json.loads(json.dumps(export_request(db, request_id)))

    # Then it verifies on its own, with the keys it carries
    assert {key["key_id"] for key in document["keys"]} == {
        identities.key_for("submitter").key_id,
        identities.key_for("operator").key_id,
    }
    assert verify_export(document).ok

    # And not once a decision in it is edited
    document["decisions"][-1]["type"] = "rejected"
    assert failures_of(verify_export(document), request_id) == [
        (Kind.CHAIN, 2, document["decisions"][-1]["position"])
    ]


def test_a_missing_request_cannot_be_exported(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(LookupError, match="no request"):
        export_request(db, new_id())


# --------------------------------------------------------------------------- anchors


def test_an_anchor_proves_a_full_chain_rewrite(
    private: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Given two requests anchored with an operator's key
    request_id, untouched = approved_request(private), approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, identities.key_for("operator"), anchor)
    assert check_anchor(private, anchor, pinned=OPERATOR).ok

    # When one decision is rewritten and the whole chain and head recomputed after it
    tamper(
        private,
        "UPDATE request_decisions SET type = 'created' WHERE request_id = %s AND revision = 2",
        (request_id,),
    )
    rechain(private, request_id)

    # Then the chain alone cannot tell, but the anchor does, naming the request
    findings = verify_request(private, request_id)
    assert findings is not None and findings.ok
    anchored = check_anchor(private, anchor, pinned=OPERATOR)
    assert [(f.kind, f.revision) for f in anchored.failures] == [(Kind.REWRITTEN, 2)]
    assert anchored.failures[0].request_id == request_id
    assert "no longer gives the head" in anchored.failures[0].message
    assert untouched not in {f.request_id for f in anchored.items}


def test_an_anchor_finds_removed_decisions(
    private: psycopg.Connection[Any], tmp_path: Path
) -> None:
    request_id = approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, identities.key_for("operator"), anchor)

    tamper(
        private,
        "DELETE FROM request_decisions WHERE request_id = %s AND revision = 2",
        (request_id,),
    )

    failures = check_anchor(private, anchor, pinned=OPERATOR).failures
    assert [f.kind for f in failures] == [Kind.REWRITTEN]
    assert "remain (removed)" in failures[0].message


def test_an_edited_anchor_does_not_verify(private: psycopg.Connection[Any], tmp_path: Path) -> None:
    request_id = approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, identities.key_for("operator"), anchor)
    document = json.loads(anchor.read_text(encoding="utf-8"))
    document["heads"][request_id]["chain_head"] = "0" * 64
    anchor.write_text(json.dumps(document), encoding="utf-8")

    failures = check_anchor(private, anchor, pinned=OPERATOR).failures

    assert [f.kind for f in failures] == [Kind.ANCHOR]
    assert "signature does not verify" in failures[0].message


def test_an_anchor_key_must_be_the_registered_one(
    private: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Given an anchor re-signed by a key claiming the operator's registered key id
    approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, identities.key_for("operator"), anchor)
    impostor = identities.key_for("impostor")
    document = json.loads(anchor.read_text(encoding="utf-8"))
    document["public_key"] = impostor.public_key_b64
    body = {name: value for name, value in document.items() if name != "signature"}
    document["signature"] = b64url_encode(impostor.sign(rfc8785.dumps(body)))
    anchor.write_text(json.dumps(document), encoding="utf-8")

    # Then it fails on its key not being pinned; and were the impostor's key pinned too,
    # on the key id being registered with another public key
    unpinned = check_anchor(private, anchor, pinned=OPERATOR).failures
    mismatched = check_anchor(private, anchor, pinned=[*OPERATOR, impostor.public_key_b64]).failures

    assert [f.kind for f in unpinned] == [Kind.ANCHOR]
    assert "not a pinned key" in unpinned[0].message
    assert [f.kind for f in mismatched] == [Kind.ANCHOR]
    assert "another public key" in mismatched[0].message


def test_an_anchor_signed_by_a_key_not_pinned_proves_nothing(
    private: psycopg.Connection[Any], private_url: str, tmp_path: Path
) -> None:
    # Given an anchor signed by an operator key registered in the database, over its
    # history as it stands (whoever holds the database can register such a key)
    intruder = identities.register(private_url, new_id("intruder"), roles=("operator",))
    request_id = approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, intruder, anchor)

    # When it is checked against the operator key pinned from outside the database
    findings = check_anchor(private, anchor, pinned=OPERATOR)

    # Then it fails on its key alone, before any request is compared
    assert [f.kind for f in findings.failures] == [Kind.ANCHOR]
    assert f"signed by key {intruder.key_id}" in findings.failures[0].message
    assert "not a pinned key" in findings.failures[0].message
    assert findings.requests == 0
    # and the same anchor holds once its key is pinned
    assert check_anchor(private, anchor, pinned=[intruder.public_key_b64]).ok
    assert request_id in json.loads(anchor.read_text(encoding="utf-8"))["heads"]


def test_an_anchor_is_checked_only_against_pinned_keys(
    private: psycopg.Connection[Any], tmp_path: Path
) -> None:
    approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, identities.key_for("operator"), anchor)

    with pytest.raises(AnchorError, match="none were given"):
        check_anchor(private, anchor, pinned=[])
    with pytest.raises(AnchorError, match="is not a base64url Ed25519 public key"):
        check_anchor(private, anchor, pinned=["operator"])


def test_only_an_operator_key_signs_an_anchor(
    private: psycopg.Connection[Any], private_url: str, tmp_path: Path
) -> None:
    requester = identities.register(private_url, new_id("req-only"), roles=("requester",))
    unregistered = identities.key_for(new_id("nobody"))

    with pytest.raises(AnchorError, match="no operator role"):
        write_anchor(private, requester, tmp_path / "a.json")
    with pytest.raises(AnchorError, match="not registered"):
        write_anchor(private, unregistered, tmp_path / "b.json")
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_no_anchor_is_refused(
    private: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "not-an-anchor.json"
    path.write_text('{"format": "something else"}', encoding="utf-8")

    with pytest.raises(AnchorError, match="is not an anchor"):
        check_anchor(private, path, pinned=OPERATOR)


def test_a_revoked_inactive_or_mismatched_key_signs_no_anchor(
    private: psycopg.Connection[Any], private_url: str, tmp_path: Path
) -> None:
    revoked = identities.register(private_url, new_id("op-revoked"))
    private.execute("UPDATE actor_keys SET revoked_at = now() WHERE key_id = %s", (revoked.key_id,))
    inactive = identities.register(private_url, new_id("op-inactive"))
    private.execute("UPDATE actors SET active = false WHERE actor_id = %s", (inactive.actor_id,))
    operator = identities.register(private_url, new_id("op"))
    # The operator's key id, another key's seed
    mismatched = SigningKey(
        operator.actor_id, operator.key_id, identities.key_for(new_id("other")).seed
    )

    with pytest.raises(AnchorError, match="was revoked at"):
        write_anchor(private, revoked, tmp_path / "a.json")
    with pytest.raises(AnchorError, match="is not active"):
        write_anchor(private, inactive, tmp_path / "a.json")
    with pytest.raises(AnchorError, match="another public key than the key file's"):
        write_anchor(private, mismatched, tmp_path / "a.json")


def test_an_anchor_finds_a_request_deleted_whole(
    private: psycopg.Connection[Any], tmp_path: Path
) -> None:
    request_id = approved_request(private)
    anchor = tmp_path / "anchor.json"
    write_anchor(private, identities.key_for("operator"), anchor)

    private.execute("ALTER TABLE command_proofs DISABLE TRIGGER USER")
    try:
        private.execute("DELETE FROM command_proofs WHERE request_id = %s", (request_id,))
    finally:
        private.execute("ALTER TABLE command_proofs ENABLE TRIGGER USER")
    tamper(private, "DELETE FROM request_decisions WHERE request_id = %s", (request_id,))
    private.execute("DELETE FROM mutation_requests WHERE request_id = %s", (request_id,))

    failures = check_anchor(private, anchor, pinned=OPERATOR).failures
    assert [(f.kind, f.request_id) for f in failures] == [(Kind.REWRITTEN, request_id)]
    assert "no longer exists" in failures[0].message
