"""Passkeys in the registry and in the guarded transaction: a one-time link enrolls a
passkey as a key of its actor, the worker applies a command that passkey signed and refuses
one altered after signing, and ``verify`` (over the database and over an export, with no
database) proves the passkey-signed decision."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from governance.authentication import SIGNED
from producer import audit
from tests.integration.helpers import code_of, pending
from tests.support.commands import command, new_id
from tests.support.identities import register
from tests.support.passkeys import EDDSA, ES256, SoftPasskey
from worker import enrollment, transaction
from worker.enrollment import EnrollmentError

pytestmark = pytest.mark.integration


def enrolled(database_url: str, db: psycopg.Connection[Any], algorithm: int = ES256) -> SoftPasskey:
    actor_id = new_id("approver")
    register(database_url, actor_id, roles=("approver",))
    passkey = SoftPasskey(actor_id, algorithm)
    link = enrollment.issue_link(db, actor_id)
    enrollment.enroll_passkey(db, link.token, passkey.credential_id, passkey.cose_key, algorithm)
    return passkey


def approval_for(db: psycopg.Connection[Any], approver: str) -> dict[str, Any]:
    request_id = pending(
        db,
        requirements=[{"approval_id": "ap-1", "approver_id": approver}],
    )
    return command(
        "approve_requirement", request_id, 1, actor=approver, args={"approval_id": "ap-1"}
    )


@pytest.mark.parametrize("algorithm", [ES256, EDDSA], ids=["ES256", "EdDSA"])
def test_a_command_signed_by_an_enrolled_passkey_is_applied_and_verifies(
    database_url: str, db: psycopg.Connection[Any], algorithm: int
) -> None:
    passkey = enrolled(database_url, db, algorithm)
    signed = passkey.sign(approval_for(db, passkey.actor_id))

    outcome = transaction.apply_command(db, signed, SIGNED)

    assert outcome.applied, outcome.event
    findings = audit.verify_request(db, signed["request_id"], require_signed=True)
    assert findings is not None and findings.ok, findings and findings.lines()


def test_a_passkey_signed_command_altered_before_it_reaches_the_worker_is_unauthenticated(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    passkey = enrolled(database_url, db)
    signed = passkey.sign(approval_for(db, passkey.actor_id))
    signed["reason"] = "added by the relay"

    outcome = transaction.apply_command(db, signed, SIGNED)

    assert code_of(outcome) == "unauthenticated"
    assert "clientDataJSON.challenge" in outcome.event["rejection"]["message"]


def test_an_export_of_a_passkey_approved_request_verifies_with_no_database(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    passkey = enrolled(database_url, db)
    signed = passkey.sign(approval_for(db, passkey.actor_id))
    assert transaction.apply_command(db, signed, SIGNED).applied

    document = json.loads(json.dumps(audit.export_request(db, signed["request_id"])))

    findings = audit.verify_export(document, require_signed=True)
    assert findings.ok, findings.lines()
    passkeys = [key for key in document["keys"] if key.get("scheme") == "webauthn"]
    assert [key["key_id"] for key in passkeys] == [passkey.credential_id]


def test_an_enrollment_link_is_used_once(database_url: str, db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("approver")
    register(database_url, actor_id, roles=("approver",))
    link = enrollment.issue_link(db, actor_id)
    first, second = SoftPasskey(actor_id), SoftPasskey(actor_id)
    enrollment.enroll_passkey(db, link.token, first.credential_id, first.cose_key, ES256)

    with pytest.raises(EnrollmentError, match="already used"):
        enrollment.enroll_passkey(db, link.token, second.credential_id, second.cose_key, ES256)


def test_an_expired_enrollment_link_enrolls_nothing(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    actor_id = new_id("approver")
    register(database_url, actor_id, roles=("approver",))
    link = enrollment.issue_link(db, actor_id, validity=timedelta(microseconds=1))
    passkey = SoftPasskey(actor_id)

    with pytest.raises(EnrollmentError, match="expired"):
        enrollment.enroll_passkey(db, link.token, passkey.credential_id, passkey.cose_key, ES256)


def test_the_database_keeps_only_a_hash_of_a_link_and_audits_its_issue_and_use(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    actor_id = new_id("approver")
    register(database_url, actor_id, roles=("approver",))
    link = enrollment.issue_link(db, actor_id)
    passkey = SoftPasskey(actor_id)
    enrollment.enroll_passkey(db, link.token, passkey.credential_id, passkey.cose_key, ES256)

    stored = db.execute("SELECT * FROM enrollment_links WHERE actor_id = %s", (actor_id,))
    assert link.token not in json.dumps([list(map(str, row)) for row in stored.fetchall()])
    actions = [
        row[0]
        for row in db.execute(
            "SELECT action FROM registry_audit WHERE actor_id = %s ORDER BY id", (actor_id,)
        )
    ]
    assert actions[-3:] == ["enrollment_issued", "key_added", "enrollment_used"]


def test_a_passkey_is_never_deleted(database_url: str, db: psycopg.Connection[Any]) -> None:
    passkey = enrolled(database_url, db)

    with pytest.raises(psycopg.errors.RaiseException, match="never deleted"):
        db.execute("DELETE FROM actor_keys WHERE key_id = %s", (passkey.credential_id,))


def test_actors_enroll_prints_a_one_time_link_to_the_console_origin(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    from click.testing import CliRunner

    from governance_cli.actors import actors

    actor_id = new_id("approver")
    register(database_url, actor_id, roles=("approver",))

    result = CliRunner().invoke(
        actors,
        ["enroll", actor_id, "--database-url", database_url, "--origin", "https://ok.example"],
    )

    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith("https://ok.example/enroll/")
    pending_for = enrollment.pending_enrollment(db, link.rsplit("/", 1)[1])
    assert pending_for.actor_id == actor_id


def test_actors_show_names_a_passkey_by_its_algorithm(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    from click.testing import CliRunner

    from governance_cli.actors import actors

    passkey = enrolled(database_url, db, EDDSA)

    result = CliRunner().invoke(actors, ["show", passkey.actor_id, "--database-url", database_url])

    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if passkey.credential_id in line]
    assert "passkey, EdDSA" in line
