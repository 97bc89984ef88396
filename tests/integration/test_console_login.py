"""The console runs as a member of the reader role: it enrolls a passkey only by a one-time
link an operator issued (through the database function the reader may call), and can
write nothing else of the registry — a console taken over cannot give anyone a key."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.commands import new_id
from tests.support.database_logins import reader_login_url
from tests.support.identities import register
from tests.support.passkeys import ES256, SoftPasskey
from worker import enrollment
from worker.enrollment import EnrollmentError

pytestmark = pytest.mark.integration


def an_approver(database_url: str) -> str:
    actor_id = new_id("approver")
    register(database_url, actor_id, roles=("approver",))
    return actor_id


def test_a_reader_login_enrolls_a_passkey_by_a_link_an_operator_issued(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    actor_id = an_approver(database_url)
    link = enrollment.issue_link(db, actor_id)
    passkey = SoftPasskey(actor_id)

    with psycopg.connect(reader_login_url(database_url), autocommit=True) as console:
        key = enrollment.enroll_passkey(
            console, link.token, passkey.credential_id, passkey.cose_key, ES256
        )

    assert (key.key_id, key.actor_id, key.scheme) == (passkey.credential_id, actor_id, "webauthn")


def test_a_reader_login_enrolls_nothing_without_a_valid_link(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    actor_id = an_approver(database_url)
    passkey = SoftPasskey(actor_id)

    with (
        psycopg.connect(reader_login_url(database_url), autocommit=True) as console,
        pytest.raises(EnrollmentError, match="this enrollment link is not known"),
    ):
        enrollment.enroll_passkey(
            console, "a-token-nobody-issued", passkey.credential_id, passkey.cose_key, ES256
        )


def test_a_reader_login_cannot_register_a_key_itself(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    actor_id = an_approver(database_url)
    passkey = SoftPasskey(actor_id)

    with (
        psycopg.connect(reader_login_url(database_url), autocommit=True) as console,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        console.execute(
            "INSERT INTO actor_keys (key_id, actor_id, public_key, scheme, algorithm)"
            " VALUES (%s, %s, %s, 'webauthn', %s)",
            (passkey.credential_id, actor_id, passkey.cose_key, ES256),
        )


def test_a_reader_login_cannot_issue_itself_a_link(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    actor_id = an_approver(database_url)

    with (
        psycopg.connect(reader_login_url(database_url), autocommit=True) as console,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        enrollment.issue_link(console, actor_id)
