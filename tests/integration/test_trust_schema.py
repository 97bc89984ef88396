"""What the database itself enforces for trust: the workers' and readers' roles, keys that are
never deleted nor un-revoked, an audit row for every registry change, append-only proofs."""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from producer.keys import generate
from tests.integration.helpers import PATIENCE
from tests.support.commands import new_id, submit
from tests.support.processes import PROJECT_ROOT, service_env
from tests.support.services import fresh_database
from tests.support.signed import apply_command
from worker.migrate import migrate

pytestmark = pytest.mark.integration

REFUSED = psycopg.errors.InsufficientPrivilege
#: What a trigger's RAISE EXCEPTION arrives as.
TRIGGER_REFUSAL = psycopg.errors.RaiseException


@contextlib.contextmanager
def login_role(db: psycopg.Connection[Any], *member_of: str) -> Iterator[dict[str, str]]:
    """A temporary LOGIN role, member of ``member_of``: connection arguments for it.

    Roles belong to the whole cluster, so the name is unique to this test and the role is
    dropped afterwards, with whatever it was granted in this database.
    """
    name = f"gov_test_{secrets.token_hex(6)}"
    password = secrets.token_hex(16)
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)
        )
    )
    try:
        for group in member_of:
            db.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name))
            )
        yield {"user": name, "password": password}
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def worker_role(db: psycopg.Connection[Any]) -> str:
    """The database's worker group role, as ``governance migrate`` recorded it."""
    return _recorded_role(db, "worker_role")


def reader_role(db: psycopg.Connection[Any]) -> str:
    """The database's reader group role, as ``governance migrate`` recorded it."""
    return _recorded_role(db, "reader_role")


def _recorded_role(db: psycopg.Connection[Any], column: str) -> str:
    row = db.execute(
        sql.SQL("SELECT {} FROM deployment_settings").format(sql.Identifier(column))
    ).fetchone()
    assert row is not None and row[0]
    return str(row[0])


def connect_as(database_url: str, role: dict[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        database_url, autocommit=True, user=role["user"], password=role["password"]
    )


def insert_request(
    conn: psycopg.Connection[Any], request_id: str, chain_head: str | None = None
) -> None:
    columns = "" if chain_head is None else ", chain_head"
    conn.execute(
        "INSERT INTO mutation_requests (request_id, state_id, state_type, mutation_type, intent,"
        f" context, status, revision, created_at, updated_at{columns})"
        " VALUES (%s, 's-1', 'config', 'update', '{}', '{}', 'created', 1, now(), now()"
        + ("" if chain_head is None else ", %s")
        + ")",
        (request_id,) if chain_head is None else (request_id, chain_head),
    )


def insert_history(conn: psycopg.Connection[Any], request_id: str, chain_hash: str) -> None:
    """A request at revision 1 with its decision and its kept command, in one transaction
    (the database refuses a request row that its decisions do not account for)."""
    with conn.transaction():
        insert_request(conn, request_id, chain_hash)
        insert_decision(conn, request_id, chain_hash)
        insert_proof(conn, request_id)


def insert_decision(conn: psycopg.Connection[Any], request_id: str, chain_hash: str) -> None:
    conn.execute(
        "INSERT INTO request_decisions (request_id, revision, position, command_id, category,"
        " type, actor, actor_id, occurred_at, chain_hash)"
        " VALUES (%s, 1, 0, %s, 'lifecycle', 'submitted', '{\"id\": \"alice\"}', 'alice', now(),"
        " %s)",
        (request_id, f"cmd-{request_id}", chain_hash),
    )


def insert_proof(conn: psycopg.Connection[Any], request_id: str) -> None:
    conn.execute(
        "INSERT INTO command_proofs (request_id, revision, command_id, key_id, signed_command)"
        " VALUES (%s, 1, %s, NULL, '{}')",
        (request_id, f"cmd-{request_id}"),
    )


def insert_actor_with_key(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    actor_id = new_id("actor")
    key_id = new_id("key")
    conn.execute("INSERT INTO actors (actor_id, type) VALUES (%s, 'user')", (actor_id,))
    conn.execute(
        "INSERT INTO actor_keys (key_id, actor_id, public_key) VALUES (%s, %s, %s)",
        (key_id, actor_id, generate(actor_id).public_key_b64),
    )
    return actor_id, key_id


# --- roles --------------------------------------------------------------------------------


def test_the_roles_are_the_databases_own_and_cannot_log_in(db: psycopg.Connection[Any]) -> None:
    (database,) = db.execute("SELECT current_database()").fetchone() or ("",)
    rows = db.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN (%s, %s) ORDER BY rolname",
        (worker_role(db), reader_role(db)),
    ).fetchall()

    assert rows == [(f"{database}_reader", False), (f"{database}_worker", False)]


def test_a_worker_appends_history_but_cannot_rewrite_it(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    with login_role(db, worker_role(db)) as role, connect_as(database_url, role) as worker:
        # Given a request, its decision and its proof, written by a worker
        request_id = new_id()
        insert_history(worker, request_id, "0" * 64)
        assert worker.execute(
            "SELECT count(*) FROM request_decisions WHERE request_id = %s", (request_id,)
        ).fetchone() == (1,)

        # When it tries to rewrite or remove them
        for statement in (
            "UPDATE request_decisions SET reason = 'rewritten' WHERE request_id = %s",
            "DELETE FROM request_decisions WHERE request_id = %s",
            "UPDATE request_decisions SET chain_hash = NULL WHERE request_id = %s",
            "UPDATE command_proofs SET signed_command = '{}' WHERE request_id = %s",
            "DELETE FROM command_proofs WHERE request_id = %s",
        ):
            # Then the database refuses, on privileges (before any trigger is asked)
            with pytest.raises(REFUSED):
                worker.execute(statement, (request_id,))
        with pytest.raises(REFUSED):
            worker.execute("TRUNCATE request_decisions")


def test_a_worker_can_do_its_bookkeeping(db: psycopg.Connection[Any], database_url: str) -> None:
    with login_role(db, worker_role(db)) as role, connect_as(database_url, role) as worker:
        # Retention of the ledger, the log and delivery attempts, publication marks on the
        # outbox
        worker.execute("DELETE FROM processed_commands WHERE command_id = 'none'")
        worker.execute("DELETE FROM outbox_events WHERE false")
        worker.execute(
            "INSERT INTO delivery_attempts (message_key, attempts) VALUES (%s, 1)",
            (new_id("msg"),),
        )
        worker.execute("UPDATE delivery_attempts SET attempts = attempts + 1")
        worker.execute("DELETE FROM delivery_attempts")
        worker.execute("UPDATE outbox_events SET published_at = now() WHERE false")
        worker.execute("SELECT actor_id, roles, groups, active FROM actors").fetchall()
        worker.execute("SELECT key_id, public_key, revoked_at FROM actor_keys").fetchall()

        # But not delete requests
        with pytest.raises(REFUSED):
            worker.execute("DELETE FROM mutation_requests WHERE false")


def test_a_worker_cannot_write_the_registry(db: psycopg.Connection[Any], database_url: str) -> None:
    # Given a registered actor with a key
    actor_id, key_id = insert_actor_with_key(db)

    with login_role(db, worker_role(db)) as role, connect_as(database_url, role) as worker:
        # When a worker tries to register, promote, re-key or revoke
        for statement, params in (
            ("INSERT INTO actors (actor_id, type) VALUES (%s, 'user')", (new_id("mallory"),)),
            ("UPDATE actors SET roles = '{operator}' WHERE actor_id = %s", (actor_id,)),
            ("DELETE FROM actors WHERE actor_id = %s", (actor_id,)),
            (
                "INSERT INTO actor_keys (key_id, actor_id, public_key) VALUES (%s, %s, %s)",
                (new_id("key"), actor_id, generate(actor_id).public_key_b64),
            ),
            ("UPDATE actor_keys SET revoked_at = now() WHERE key_id = %s", (key_id,)),
            ("INSERT INTO registry_audit (action) VALUES (%s)", ("forged",)),
        ):
            # Then the database refuses every one
            with pytest.raises(REFUSED):
                worker.execute(statement, params)
        with pytest.raises(REFUSED):
            worker.execute("SELECT * FROM registry_audit")

    # And the actor is as registered
    assert db.execute("SELECT roles FROM actors WHERE actor_id = %s", (actor_id,)).fetchone() == (
        [],
    )


@pytest.mark.parametrize(
    ("assignment", "refusal"),
    [
        pytest.param(
            "status = 'approved', pending_reason = NULL",
            "changed without a new revision",
            id="status-alone",
        ),
        pytest.param(
            "status = 'approved', pending_reason = NULL, revision = revision + 1",
            "with no command kept for it",
            id="status-and-revision",
        ),
    ],
)
def test_a_worker_cannot_set_a_status_its_decisions_do_not_account_for(
    db: psycopg.Connection[Any], database_url: str, assignment: str, refusal: str
) -> None:
    # Given a pending request written through the guarded path
    request_id = new_id()
    assert apply_command(db, submit(request_id, initial_status="pending")).applied

    # When a worker sets it approved by hand, with no decision behind it
    # Then the database refuses it (the deferred guard, at the statement's commit)
    with (
        login_role(db, worker_role(db)) as role,
        connect_as(database_url, role) as worker,
        pytest.raises(TRIGGER_REFUSAL, match=refusal),
    ):
        worker.execute(
            f"UPDATE mutation_requests SET {assignment} WHERE request_id = %s", (request_id,)
        )

    # And the request is as its decisions left it
    assert db.execute(
        "SELECT status, revision FROM mutation_requests WHERE request_id = %s", (request_id,)
    ).fetchone() == ("pending", 1)


def test_a_reader_reads_everything_and_writes_nothing(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    with login_role(db, reader_role(db)) as role, connect_as(database_url, role) as reader:
        for table in (
            "mutation_requests",
            "request_decisions",
            "command_proofs",
            "processed_commands",
            "outbox_events",
            "delivery_attempts",
            "actors",
            "actor_keys",
            "registry_audit",
        ):
            reader.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(table)))
        with pytest.raises(REFUSED):
            insert_request(reader, new_id())
        with pytest.raises(REFUSED):
            reader.execute("UPDATE outbox_events SET published_at = now() WHERE false")


# --- keys ---------------------------------------------------------------------------------


def test_a_key_is_never_deleted(db: psycopg.Connection[Any]) -> None:
    _, key_id = insert_actor_with_key(db)

    with pytest.raises(TRIGGER_REFUSAL, match="never deleted"):
        db.execute("DELETE FROM actor_keys WHERE key_id = %s", (key_id,))
    with pytest.raises(TRIGGER_REFUSAL, match="append-only"):
        db.execute("TRUNCATE actor_keys CASCADE")
    assert db.execute(
        "SELECT count(*) FROM actor_keys WHERE key_id = %s", (key_id,)
    ).fetchone() == (1,)


def test_a_key_is_revoked_once_and_for_good(db: psycopg.Connection[Any]) -> None:
    # Given a revoked key
    _, key_id = insert_actor_with_key(db)
    db.execute("UPDATE actor_keys SET revoked_at = now() WHERE key_id = %s", (key_id,))

    # Then it can be neither un-revoked nor revoked again (at another time)
    with pytest.raises(TRIGGER_REFUSAL, match="revoked for good"):
        db.execute("UPDATE actor_keys SET revoked_at = NULL WHERE key_id = %s", (key_id,))
    with pytest.raises(TRIGGER_REFUSAL, match="revoked for good"):
        db.execute(
            "UPDATE actor_keys SET revoked_at = now() + interval '1 day' WHERE key_id = %s",
            (key_id,),
        )


@pytest.mark.parametrize(
    "assignment",
    [
        "public_key = %(other)s",
        "actor_id = %(actor)s",
        "created_at = now() - interval '1 year'",
        "public_key = %(other)s, revoked_at = now()",
        "revoked_at = NULL",
    ],
)
def test_a_live_key_takes_no_change_but_its_revocation(
    db: psycopg.Connection[Any], assignment: str
) -> None:
    _, key_id = insert_actor_with_key(db)
    other_actor, _ = insert_actor_with_key(db)
    params = {"key_id": key_id, "other": generate("x").public_key_b64, "actor": other_actor}

    with pytest.raises(TRIGGER_REFUSAL, match="can only be revoked"):
        db.execute(
            f"UPDATE actor_keys SET {assignment} WHERE key_id = %(key_id)s",
            params,
        )


def test_a_public_key_must_look_like_32_bytes_of_base64url(db: psycopg.Connection[Any]) -> None:
    actor_id, _ = insert_actor_with_key(db)

    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO actor_keys (key_id, actor_id, public_key) VALUES (%s, %s, 'short')",
            (new_id("key"), actor_id),
        )


# --- audit --------------------------------------------------------------------------------


def audit_rows(db: psycopg.Connection[Any], actor_id: str) -> list[dict[str, Any]]:
    cursor = db.execute(
        "SELECT action, actor_id, key_id, by, at, details, at <= now() AS past"
        " FROM registry_audit WHERE actor_id = %s ORDER BY id",
        (actor_id,),
    )
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_every_registry_change_leaves_an_audit_row(db: psycopg.Connection[Any]) -> None:
    # Given the connecting login
    (login,) = db.execute("SELECT session_user").fetchone() or ("",)

    # When an actor is added, changed, given a key, the key revoked, another key-less actor
    # added and deleted
    actor_id, key_id = insert_actor_with_key(db)
    db.execute(
        "UPDATE actors SET roles = '{approver}', name = 'Alice' WHERE actor_id = %s", (actor_id,)
    )
    db.execute("UPDATE actor_keys SET revoked_at = now() WHERE key_id = %s", (key_id,))
    gone = new_id("gone")
    db.execute("INSERT INTO actors (actor_id, type) VALUES (%s, 'service')", (gone,))
    db.execute("DELETE FROM actors WHERE actor_id = %s", (gone,))

    # Then each change has its row: who, when and what
    rows = audit_rows(db, actor_id)
    assert [(row["action"], row["key_id"]) for row in rows] == [
        ("actor_added", None),
        ("key_added", key_id),
        ("actor_updated", None),
        ("key_revoked", key_id),
    ]
    assert all(row["by"] == login and row["past"] for row in rows)
    assert rows[0]["details"] == {
        "name": None,
        "type": "user",
        "roles": [],
        "groups": [],
        "active": True,
    }
    public_key = db.execute(
        "SELECT public_key FROM actor_keys WHERE key_id = %s", (key_id,)
    ).fetchone()
    assert public_key is not None
    assert rows[1]["details"] == {"public_key": public_key[0]}
    assert rows[2]["details"] == {
        "name": {"from": None, "to": "Alice"},
        "roles": {"from": [], "to": ["approver"]},
    }
    assert rows[3]["details"]["revoked_at"] is not None
    assert [row["action"] for row in audit_rows(db, gone)] == ["actor_added", "actor_deleted"]


def test_the_audit_names_the_login_that_made_the_change(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # Given an operator login allowed to write the registry (and, for the triggers, its audit)
    with login_role(db) as role:
        user = sql.Identifier(role["user"])
        db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON actors, actor_keys TO {}").format(user))
        db.execute(sql.SQL("GRANT INSERT ON registry_audit TO {}").format(user))
        db.execute(sql.SQL("GRANT USAGE ON SEQUENCE registry_audit_id_seq TO {}").format(user))

        # When it registers an actor
        with connect_as(database_url, role) as operator:
            actor_id, _ = insert_actor_with_key(operator)
            # Then it cannot erase what it did
            with pytest.raises(REFUSED):
                operator.execute("DELETE FROM registry_audit")

        # And the audit says who
        assert {row["by"] for row in audit_rows(db, actor_id)} == {role["user"]}


def test_the_audit_is_append_only(db: psycopg.Connection[Any]) -> None:
    actor_id, _ = insert_actor_with_key(db)

    with pytest.raises(TRIGGER_REFUSAL, match="registry_audit is append-only"):
        db.execute("UPDATE registry_audit SET by = 'nobody' WHERE actor_id = %s", (actor_id,))
    with pytest.raises(TRIGGER_REFUSAL, match="registry_audit is append-only"):
        db.execute("DELETE FROM registry_audit WHERE actor_id = %s", (actor_id,))
    with pytest.raises(TRIGGER_REFUSAL, match="registry_audit is append-only"):
        db.execute("TRUNCATE registry_audit")


# --- proofs and the chain -------------------------------------------------------------------


def test_proofs_and_decisions_are_append_only_for_the_owner_too(
    db: psycopg.Connection[Any],
) -> None:
    request_id = new_id()
    insert_history(db, request_id, "ab" * 32)

    with pytest.raises(TRIGGER_REFUSAL, match="command_proofs is append-only"):
        db.execute("UPDATE command_proofs SET key_id = 'k' WHERE request_id = %s", (request_id,))
    with pytest.raises(TRIGGER_REFUSAL, match="command_proofs is append-only"):
        db.execute("DELETE FROM command_proofs WHERE request_id = %s", (request_id,))
    with pytest.raises(TRIGGER_REFUSAL, match="command_proofs is append-only"):
        db.execute("TRUNCATE command_proofs")
    with pytest.raises(TRIGGER_REFUSAL, match="request_decisions is append-only"):
        db.execute(
            "UPDATE request_decisions SET chain_hash = NULL WHERE request_id = %s", (request_id,)
        )


def test_one_proof_per_applied_revision(db: psycopg.Connection[Any]) -> None:
    request_id = new_id()
    insert_history(db, request_id, "ab" * 32)

    with pytest.raises(psycopg.errors.UniqueViolation):
        insert_proof(db, request_id)


# --- migrating ------------------------------------------------------------------------------


def test_databases_of_one_cluster_migrate_at_once(postgres_server_url: str) -> None:
    # Given three empty databases of the same cluster (the roles are shared by all of them)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(fresh_database(postgres_server_url)) for _ in range(3)]

        # When `governance migrate` runs on each at the same moment
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "governance_cli.main", "migrate", "--database-url", url],
                cwd=PROJECT_ROOT,
                env=service_env(url, "amqp://unused//"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for url in urls
        ]
        results = [process.communicate(timeout=PATIENCE * 2) for process in processes]

        # Then every one reached the head, with its own roles granted in each
        assert [process.returncode for process in processes] == [0, 0, 0], results
        assert len({stdout.splitlines()[0] for stdout, _ in results}) == 1
        for url in urls:
            with psycopg.connect(url) as conn:
                assert conn.execute(
                    "SELECT has_table_privilege(worker_role, 'request_decisions', 'INSERT'),"
                    " has_table_privilege(worker_role, 'request_decisions', 'UPDATE'),"
                    " has_table_privilege(reader_role, 'actors', 'SELECT'),"
                    " worker_role = current_database() || '_worker'"
                    " FROM deployment_settings"
                ).fetchone() == (True, False, True, True)


def test_the_trust_migration_downgrades_and_upgrades_again(postgres_server_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from worker.config import sqlalchemy_url
    from worker.migrate import MIGRATIONS

    with fresh_database(postgres_server_url) as url:
        migrate(url)
        with psycopg.connect(url) as conn:
            worker = worker_role(conn)
        engine = create_engine(sqlalchemy_url(url))

        def alembic(action: Any, target: str) -> None:
            with engine.begin() as connection:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                action(config, target)

        try:
            # When the trust migration is undone
            alembic(command.downgrade, "0002")
            with psycopg.connect(url) as conn:
                tables = {
                    row[0]
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                }
                # Then its tables and this database's grants are gone (the roles stay)
                assert not tables & {"actors", "actor_keys", "registry_audit", "command_proofs"}
                assert conn.execute(
                    "SELECT has_table_privilege(%s, 'mutation_requests', 'SELECT')", (worker,)
                ).fetchone() == (False,)
                # And the decisions' refusal reads as it did
                request_id = new_id()
                insert_request(conn, request_id)
                conn.execute(
                    "INSERT INTO request_decisions (request_id, revision, position, command_id,"
                    " category, type, actor, actor_id, occurred_at)"
                    " VALUES (%s, 1, 0, 'c', 'lifecycle', 'submitted', '{}', 'a', now())",
                    (request_id,),
                )
                with pytest.raises(TRIGGER_REFUSAL, match="request_decisions is append-only"):
                    conn.execute("DELETE FROM request_decisions")
                conn.rollback()

            # When it is applied again, everything is back
            alembic(command.upgrade, "head")
            with psycopg.connect(url) as conn:
                assert conn.execute(
                    "SELECT has_table_privilege(%s, 'command_proofs', 'INSERT')", (worker,)
                ).fetchone() == (True,)
        finally:
            engine.dispose()


def _trust_migration() -> Any:
    path = PROJECT_ROOT / "worker" / "migrations" / "versions" / "0003_trust.py"
    spec = importlib.util.spec_from_file_location("trust_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_role_created_meanwhile_by_another_database_is_no_error(
    db: psycopg.Connection[Any], database_url: str, postgres_server_url: str
) -> None:
    # Given the statement that creates a role if it is missing, under a name of this test
    name = f"gov_test_{secrets.token_hex(6)}"
    create = _trust_migration()._create_role(name)
    try:
        with (
            fresh_database(postgres_server_url) as other_url,
            psycopg.connect(database_url) as first,
            psycopg.connect(other_url) as second,
        ):
            # When one database's migration creates it and has not committed yet
            first.execute(create)
            (second_pid,) = second.execute("SELECT pg_backend_pid()").fetchone() or (0,)
            outcome: list[BaseException | None] = []

            def run_second() -> None:
                try:
                    second.execute(create)
                    second.commit()
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            # and another database's migration, not seeing it yet, tries to create it too
            thread = threading.Thread(target=run_second)
            thread.start()
            deadline = time.monotonic() + PATIENCE
            while time.monotonic() < deadline:
                waiting = db.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (second_pid,)
                ).fetchone()
                if waiting == ("Lock",):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the second CREATE ROLE never waited for the first")
            first.commit()
            thread.join(PATIENCE)

            # Then the second one succeeds too, and the role exists once
            assert outcome == [None]
            assert db.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)
            ).fetchone() == (1,)
    finally:
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
