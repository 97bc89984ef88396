"""The database's own roles: ``governance migrate`` creates ``<database>_worker`` and
``<database>_reader`` (or the names its options give), grants them exactly what the worker
does and what a reader reads, in this database only, and takes back what the server-wide
roles of earlier releases held here."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.integration.helpers import PATIENCE
from tests.integration.test_trust_schema import REFUSED, connect_as, login_role
from tests.support.commands import new_id, submit
from tests.support.processes import PROJECT_ROOT, service_env
from tests.support.services import fresh_database, unavailable
from tests.support.signed import apply_command
from worker.database_roles import LEGACY_ROLES, WORKER_PRIVILEGES
from worker.migrate import migrate

pytestmark = pytest.mark.integration

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def governance_migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", "migrate", "--database-url", url, *args],
        cwd=PROJECT_ROOT,
        env=service_env(url, "amqp://unused//"),
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
        check=False,
    )


def database_of(conn: psycopg.Connection[Any]) -> str:
    (name,) = conn.execute("SELECT current_database()").fetchone() or ("",)
    return str(name)


def recorded_roles(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    row = conn.execute("SELECT worker_role, reader_role FROM deployment_settings").fetchone()
    assert row is not None
    return row[0], row[1]


def can_log_in(conn: psycopg.Connection[Any], role: str) -> bool | None:
    row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return None if row is None else bool(row[0])


def privileges(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every table, column and sequence privilege of the schema, and of the schema itself."""
    return conn.execute(
        """
SELECT c.relname, NULL, c.relacl::text FROM pg_class AS c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'S')
UNION ALL
SELECT c.relname, a.attname, a.attacl::text FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
WHERE c.relnamespace = current_schema()::regnamespace AND a.attacl IS NOT NULL
UNION ALL
SELECT nspname, NULL, nspacl::text FROM pg_namespace WHERE nspname = current_schema()
ORDER BY 1, 2
"""
    ).fetchall()


@contextlib.contextmanager
def dropped_afterwards(server_url: str, *roles: str) -> Iterator[None]:
    """Drop ``roles`` (server-wide) when the block ends, its databases dropped by then."""
    try:
        yield
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def role_names(postgres_server_url: str) -> Iterator[tuple[str, str]]:
    """A worker and a reader role name of this test alone, dropped after its databases."""
    names = f"gov_test_w_{secrets.token_hex(4)}", f"gov_test_r_{secrets.token_hex(4)}"
    with dropped_afterwards(postgres_server_url, *names):
        yield names


@pytest.fixture
def empty_database(role_names: tuple[str, str], postgres_server_url: str) -> Iterator[str]:
    """An unmigrated database, dropped before the roles of :func:`role_names`."""
    with fresh_database(postgres_server_url) as url:
        yield url


# --- naming ----------------------------------------------------------------------------------


def test_migrate_creates_roles_named_after_the_database_and_says_so(empty_database: str) -> None:
    done = governance_migrate(empty_database)

    assert done.returncode == 0, done.stderr
    with psycopg.connect(empty_database) as conn:
        database = database_of(conn)
        worker, reader = f"{database}_worker", f"{database}_reader"
        assert recorded_roles(conn) == (worker, reader)
        assert (can_log_in(conn, worker), can_log_in(conn, reader)) == (False, False)
    assert f"worker role {worker} (created)" in done.stdout
    assert f"reader role {reader} (created)" in done.stdout


def test_migrate_creates_the_roles_its_options_name(
    empty_database: str, role_names: tuple[str, str]
) -> None:
    worker, reader = role_names

    done = governance_migrate(empty_database, "--worker-role", worker, "--reader-role", reader)

    assert done.returncode == 0, done.stderr
    assert f"worker role {worker} (created)" in done.stdout
    assert f"reader role {reader} (created)" in done.stdout
    with psycopg.connect(empty_database) as conn:
        assert recorded_roles(conn) == (worker, reader)
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'request_decisions', 'INSERT'),"
            " has_table_privilege(%s, 'request_decisions', 'SELECT')",
            (worker, reader),
        ).fetchone() == (True, True)


def test_a_later_migrate_keeps_the_names_recorded(
    empty_database: str, role_names: tuple[str, str]
) -> None:
    worker, _ = role_names
    migrate(empty_database, worker_role=worker)

    done = governance_migrate(empty_database)

    assert done.returncode == 0, done.stderr
    assert f"worker role {worker} (exists)" in done.stdout
    with psycopg.connect(empty_database) as conn:
        assert recorded_roles(conn)[0] == worker


def test_a_role_named_anew_takes_over_and_the_previous_one_keeps_nothing(
    empty_database: str, role_names: tuple[str, str]
) -> None:
    # Given a database migrated with the default roles
    migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        previous, _ = recorded_roles(conn)
    renamed, _ = role_names

    # When it is migrated again naming another worker role
    done = governance_migrate(empty_database, "--worker-role", renamed)

    # Then the new role has the privileges and the previous one none (it stays)
    assert done.returncode == 0, done.stderr
    assert f"revoked every privilege of {previous} in this database" in done.stdout
    with psycopg.connect(empty_database) as conn:
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'outbox_events', 'INSERT'),"
            " has_table_privilege(%s, 'outbox_events', 'SELECT'),"
            " EXISTS (SELECT FROM pg_roles WHERE rolname = %s)",
            (renamed, previous, previous),
        ).fetchone() == (True, False, True)


def test_a_default_name_past_63_bytes_is_refused_naming_the_options(
    postgres_server_url: str, role_names: tuple[str, str]
) -> None:
    # Given a database whose name leaves no room for "_worker" within 63 bytes
    name = f"governance_test_{os.getpid()}_{secrets.token_hex(3)}_".ljust(60, "x")
    worker, reader = role_names
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = postgres_server_url.rsplit("/", 1)[0] + f"/{name}"

            # When it is migrated with the default names, then with names given
            refused = governance_migrate(url)
            named = governance_migrate(url, "--worker-role", worker, "--reader-role", reader)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    # Then the first is refused (nothing migrated), saying what to do, the second succeeds
    assert refused.returncode == 2
    assert "longer than PostgreSQL's 63 bytes" in refused.stderr
    assert "--worker-role and --reader-role" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert named.returncode == 0, named.stderr


def test_the_owner_cannot_be_named_as_a_group_role(empty_database: str) -> None:
    with psycopg.connect(empty_database) as conn:
        (owner,) = conn.execute("SELECT current_user").fetchone() or ("",)

    done = governance_migrate(empty_database, "--reader-role", owner)

    assert done.returncode == 2
    assert "the migrating role or a superuser" in done.stderr


# --- idempotence and the declaration -----------------------------------------------------------


def test_migrating_again_changes_no_privilege(empty_database: str) -> None:
    migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        once = privileges(conn)

    migrate(empty_database)

    with psycopg.connect(empty_database) as conn:
        assert privileges(conn) == once


def test_every_table_declares_what_the_worker_may_do_and_is_granted_exactly_that(
    db: psycopg.Connection[Any],
) -> None:
    worker, reader = recorded_roles(db)
    tables = {
        row[0]
        for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    }

    # Every table of the schema has its entry (a migration adding a table must say what the
    # worker does with it)
    assert tables == set(WORKER_PRIVILEGES)
    for table in sorted(tables):
        declared = WORKER_PRIVILEGES[table]
        granted = {
            privilege
            for privilege in TABLE_PRIVILEGES
            if db.execute(
                "SELECT has_table_privilege(%s, %s, %s)", (worker, table, privilege)
            ).fetchone()
            == (True,)
        }
        column_update = db.execute(
            "SELECT has_any_column_privilege(%s, %s, 'UPDATE')", (worker, table)
        ).fetchone()
        # The worker holds exactly its declared table privileges, and UPDATE of columns
        # only where declared
        assert granted == set(declared) - {p for p in declared if p.startswith("UPDATE (")}, table
        assert column_update == (any(p.startswith("UPDATE") for p in declared),), table
        # And the reader reads every table, and writes none
        assert db.execute(
            "SELECT has_table_privilege(%s, %s, 'SELECT'),"
            " has_any_column_privilege(%s, %s, 'INSERT, UPDATE, REFERENCES')",
            (reader, table, reader, table),
        ).fetchone() == (True, False), table


def test_the_server_wide_roles_keep_nothing_here_and_are_kept(db: psycopg.Connection[Any]) -> None:
    for role in LEGACY_ROLES:
        assert db.execute(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)", (role,)
        ).fetchone() == (True,)
        assert db.execute(
            "SELECT has_table_privilege(%s, 'mutation_requests', 'SELECT'),"
            " has_schema_privilege(%s, current_schema(), 'CREATE')",
            (role, role),
        ).fetchone() == (False, False)


def test_migrate_says_it_took_back_what_the_server_wide_roles_held(empty_database: str) -> None:
    done = governance_migrate(empty_database)

    assert done.returncode == 0, done.stderr
    assert (
        f"revoked every privilege of {', '.join(LEGACY_ROLES)} in this database (the roles are "
        "kept: other databases of this server may still use them)"
    ) in done.stdout


# --- one database only -----------------------------------------------------------------------


def test_a_worker_role_of_one_database_gives_nothing_in_another(
    db: psycopg.Connection[Any], postgres_server_url: str
) -> None:
    worker, _ = recorded_roles(db)
    with fresh_database(postgres_server_url) as other_url:
        migrate(other_url)
        # Given a login of this database's worker role
        with login_role(db, worker) as role, connect_as(other_url, role) as elsewhere:
            # When it connects to the other database of the same server
            # Then it may neither read nor change anything there
            for statement in (
                "SELECT count(*) FROM mutation_requests",
                "UPDATE mutation_requests SET status = status WHERE false",
                "INSERT INTO maintenance_runs VALUES ('relay', now(), 0)",
                "DELETE FROM outbox_events WHERE false",
            ):
                with pytest.raises(REFUSED):
                    elsewhere.execute(statement)


def test_the_roles_outlive_their_database_and_go_with_drop_role(
    postgres_server_url: str,
) -> None:
    # Given a migrated database, dropped
    with fresh_database(postgres_server_url) as url:
        migrate(url)
        with psycopg.connect(url) as conn:
            worker, reader = recorded_roles(conn)
        with psycopg.connect(postgres_server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(url.rsplit("/", 1)[1])
                )
            )

            # Then its roles are still there, named after it
            assert admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (worker, reader)
            ).fetchone() == (2,)
            # And DROP ROLE removes them, nothing else needed (they held privileges in that
            # database only)
            admin.execute(
                sql.SQL("DROP ROLE {}, {}").format(sql.Identifier(worker), sql.Identifier(reader))
            )
            assert admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (worker, reader)
            ).fetchone() == (0,)


# --- what the worker cannot do -----------------------------------------------------------------


@pytest.fixture
def worker_login(
    db: psycopg.Connection[Any], database_url: str
) -> Iterator[psycopg.Connection[Any]]:
    """A connection of a login in this database's worker role."""
    worker, _ = recorded_roles(db)
    with login_role(db, worker) as role, connect_as(database_url, role) as conn:
        yield conn


def test_the_worker_role_marks_events_published_but_cannot_rewrite_their_body(
    db: psycopg.Connection[Any], worker_login: psycopg.Connection[Any]
) -> None:
    sequence = apply_command(db, submit(new_id())).sequence

    worker_login.execute(
        "UPDATE outbox_events SET published_at = now() WHERE sequence = %s", (sequence,)
    )
    with pytest.raises(REFUSED):
        worker_login.execute(
            "UPDATE outbox_events SET body = '{}' WHERE sequence = %s", (sequence,)
        )
    with pytest.raises(REFUSED):
        worker_login.execute(
            "UPDATE outbox_events SET routing_key = 'x', published_at = now() WHERE sequence = %s",
            (sequence,),
        )


@pytest.mark.parametrize("column", ["intent", "context", "state_id", "mutation_type", "policy"])
def test_the_worker_role_cannot_change_what_a_request_asked_for(
    db: psycopg.Connection[Any], worker_login: psycopg.Connection[Any], column: str
) -> None:
    request_id = new_id()
    assert apply_command(db, submit(request_id)).applied

    with pytest.raises(REFUSED):
        worker_login.execute(
            sql.SQL("UPDATE mutation_requests SET {} = {} WHERE request_id = %s").format(
                sql.Identifier(column), sql.Identifier(column)
            ),
            (request_id,),
        )


def test_the_worker_role_cannot_rewrite_the_ledger(
    worker_login: psycopg.Connection[Any],
) -> None:
    with pytest.raises(REFUSED):
        worker_login.execute("UPDATE processed_commands SET outcome = outcome WHERE false")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE policy_versions SET forced = forced WHERE false",
        "INSERT INTO policy_versions (version, sha256, document) VALUES (99, '', '{}')",
        "UPDATE deployment_settings SET auth = 'off'",
        "DELETE FROM log_horizon",
        "DELETE FROM maintenance_runs",
        "TRUNCATE outbox_events CASCADE",
    ],
)
def test_the_worker_role_cannot_write_the_policy_the_settings_or_the_records_away(
    worker_login: psycopg.Connection[Any], statement: str
) -> None:
    with pytest.raises(REFUSED):
        worker_login.execute(statement)


# --- the deployment's login ------------------------------------------------------------------


def run_login_script(database_url: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """The compose files' one-shot login step, run as the owner of ``database_url``."""
    if shutil.which("psql") is None:
        unavailable("psql is not installed: cannot run the deployment's login script")
    parts = urlsplit(database_url)
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
        "PGPASSWORD": parts.password or "",
        "PGDATABASE": parts.path.lstrip("/"),
        **variables,
    }
    return subprocess.run(
        ["sh", str(PROJECT_ROOT / "deploy" / "postgres" / "worker-login.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
        check=False,
    )


def test_the_deployments_worker_login_script_makes_a_member_of_the_worker_role_only(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    worker, _ = recorded_roles(db)
    login, password = f"gov_test_login_{secrets.token_hex(4)}", secrets.token_hex(12)
    try:
        # When the compose file's one-shot step runs, twice (each start of the deployment)
        runs = [
            run_login_script(
                database_url,
                GOVERNANCE_DB_WORKER_USER=login,
                GOVERNANCE_DB_WORKER_PASSWORD=password,
            )
            for _ in range(2)
        ]

        # Then the login is a member of the worker role and of nothing else, and no superuser
        assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
        assert runs[1].stdout.strip() == f"{login} is a member of {worker}"
        assert db.execute(
            "SELECT u.rolcanlogin, u.rolsuper, array_agg(g.rolname) FROM pg_roles AS u"
            " JOIN pg_auth_members AS m ON m.member = u.oid JOIN pg_roles AS g ON g.oid = m.roleid"
            " WHERE u.rolname = %s GROUP BY u.rolcanlogin, u.rolsuper",
            (login,),
        ).fetchone() == (True, False, [worker])
        # And it logs in with its password and holds what the worker role holds
        with connect_as(database_url, {"user": login, "password": password}) as conn:
            conn.execute("SELECT count(*) FROM mutation_requests")
            with pytest.raises(REFUSED):
                conn.execute("UPDATE outbox_events SET body = '{}' WHERE false")
    finally:
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))


def test_the_deployments_login_script_makes_the_console_a_member_of_the_reader_role(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    worker, reader = recorded_roles(db)
    names = [f"gov_test_{kind}_{secrets.token_hex(4)}" for kind in ("worker", "console")]
    try:
        run = run_login_script(
            database_url,
            GOVERNANCE_DB_WORKER_USER=names[0],
            GOVERNANCE_DB_WORKER_PASSWORD=secrets.token_hex(12),
            GOVERNANCE_DB_CONSOLE_USER=names[1],
            GOVERNANCE_DB_CONSOLE_PASSWORD=secrets.token_hex(12),
        )

        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[:2] == [
            f"{names[0]} is a member of {worker}",
            f"{names[1]} is a member of {reader}",
        ]
    finally:
        for name in names:
            db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
