"""The database's group roles: what a worker and a reader may do in this database, and nothing
more, and nothing anywhere else.

PostgreSQL roles belong to the whole server, not to a database, so the roles are named after
the database (``<database>_worker``, ``<database>_reader`` unless the operator names them):
a role made for one database holds nothing in another one on the same server. Both are group
roles (NOLOGIN); an operator makes a login role a member of one (README, "Database roles").

What the worker may do is declared here, table by table (:data:`WORKER_PRIVILEGES`), from
what its code runs: the guarded transaction, the relay, expiry, retention, the delivery
counts and the maintenance records. Every run of ``governance migrate`` takes back whatever
the two roles held in the schema and grants exactly the declaration again, for every table
present: re-running it changes nothing, a table a later migration adds gets its grants on the
run that adds it, and a grant made by hand to a group role does not survive (the declaration
is the only source). The reader may read every table.

Default privileges (``ALTER DEFAULT PRIVILEGES``) are not used: they would give every new
table the same privileges, which for the worker is either too much or too little, and they
hang on the role that creates the table, not on the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, text

#: PostgreSQL's longest identifier, in bytes (a longer one is silently cut, so two databases
#: with a long common prefix would share a role).
MAX_NAME_BYTES = 63

#: The cluster-wide roles earlier releases granted in every database: their privileges in a
#: migrated database are taken back (the roles stay; other databases may still use them).
LEGACY_ROLES = ("governance_worker", "governance_reader")

#: The columns of a request the worker's guarded transaction changes (``worker.sql.WRITE_RUN``);
#: what a request asked for (its intent, context, state and requester) is never rewritten.
_REQUEST_UPDATED = (
    "status, pending_reason, approval_requirements, revision, expected_state_version, "
    "expires_at, updated_at, metadata, chain_head"
)

#: Per table, what the worker role is granted; an empty tuple: nothing. Every table of the
#: schema has an entry (a test checks it), so a migration that adds a table must say what
#: the worker does with it.
WORKER_PRIVILEGES: Mapping[str, tuple[str, ...]] = {
    # The guarded transaction writes requests in their new state and locks them (FOR UPDATE
    # needs UPDATE on a column); expiry claims due ones the same way.
    "mutation_requests": ("SELECT", "INSERT", f"UPDATE ({_REQUEST_UPDATED})"),
    # History: appended, read for the chain and the standing of grants, never changed.
    "request_decisions": ("SELECT", "INSERT"),
    "command_proofs": ("SELECT", "INSERT"),
    # The idempotency ledger: recorded, looked up, pruned past its window; never rewritten.
    "processed_commands": ("SELECT", "INSERT", "DELETE"),
    # The outbox: events written, marked published by the relay (that column only: an
    # event's body is never rewritten), published ones pruned past the retention horizon.
    "outbox_events": ("SELECT", "INSERT", "UPDATE (published_at)", "DELETE"),
    # Retention's horizon of the log, upserted as it prunes.
    "log_horizon": ("SELECT", "INSERT", "UPDATE (pruned_through, pruned_at)"),
    # Deliveries of a message counted, and forgotten once completed.
    "delivery_attempts": ("SELECT", "INSERT", "UPDATE (attempts, last_seen_at)", "DELETE"),
    # The periodic tasks' last runs, upserted.
    "maintenance_runs": ("SELECT", "INSERT", "UPDATE (finished_at, handled)"),
    # Read only: the registry, the policy and the trust mode are the operator's.
    "actors": ("SELECT",),
    "actor_keys": ("SELECT",),
    "policy_versions": ("SELECT",),
    "deployment_settings": ("SELECT",),
    "registry_audit": (),
    # One-time passkey enrollment links: the operator's (the console enrolls with its access).
    "enrollment_links": (),
    # A worker starts only on the schema revision its release migrates to.
    "alembic_version": ("SELECT",),
}


#: The functions the reader role may call besides reading: enrolling a passkey by a one-time
#: link an operator issued (the function checks the link; the console runs as a reader).
READER_FUNCTIONS = ("governance_enroll_passkey(text, text, text, integer)",)


class DatabaseRoleError(ValueError):
    """Role names ``governance migrate`` cannot use (too long, or a role that must not be
    stripped of its privileges)."""


@dataclass(frozen=True, slots=True)
class DatabaseRoles:
    """What :func:`grant` left: the two group roles, which of them it created, whose
    privileges in this database it took back, and the tables nothing declares."""

    worker: str
    reader: str
    created: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    undeclared: tuple[str, ...] = ()

    def after(self, earlier: DatabaseRoles | None) -> DatabaseRoles:
        """This result, counting also what an ``earlier`` run in the same migration did."""
        if earlier is None:
            return self
        return DatabaseRoles(
            self.worker,
            self.reader,
            _union(earlier.created, self.created),
            _union(earlier.revoked, self.revoked),
            self.undeclared,
        )


def default_names(database: str) -> tuple[str, str]:
    """The roles of ``database`` when the operator names none: ``<database>_worker`` and
    ``<database>_reader``."""
    return f"{database}_worker", f"{database}_reader"


def grant(
    connection: Connection, *, worker: str | None = None, reader: str | None = None
) -> DatabaseRoles:
    """Create the worker and reader group roles when missing and make their privileges in the
    current schema exactly the declared ones; record their names in ``deployment_settings``.

    Names not given are the ones recorded by an earlier run, else the defaults of the
    database's name. Roles recorded earlier under other names, and the legacy cluster-wide
    roles, lose every privilege they held here (none of them is dropped). Idempotent; runs
    in the caller's transaction.
    """
    database, owner = connection.execute(text("SELECT current_database(), current_user")).one()
    recorded = _recorded(connection)
    default_worker, default_reader = default_names(str(database))
    worker = worker or recorded[0] or default_worker
    reader = reader or recorded[1] or default_reader
    _check_names(connection, worker, reader, str(owner))

    created = tuple(name for name in (worker, reader) if _create_if_missing(connection, name))
    revoked = []
    for name in (*LEGACY_ROLES, *recorded):
        if name is None or name in (worker, reader) or name in revoked:
            continue
        if _holds_anything(connection, name):
            _revoke_all(connection, name)
            revoked.append(name)

    tables = [
        str(row[0])
        for row in connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
    ]
    for name in (worker, reader):
        _revoke_all(connection, name)
        _execute(connection, "GRANT USAGE ON SCHEMA %I TO %I", "current_schema()", name)
    for table in tables:
        _execute(connection, "GRANT SELECT ON TABLE %I TO %I", table, reader)
        privileges = WORKER_PRIVILEGES.get(table, ())
        if privileges:
            _execute(connection, f"GRANT {', '.join(privileges)} ON TABLE %I TO %I", table, worker)
            if "INSERT" in privileges:
                _grant_sequences(connection, table, worker)
    for function in READER_FUNCTIONS:
        if connection.execute(
            text("SELECT to_regprocedure(:function) IS NOT NULL"), {"function": function}
        ).scalar_one():
            _execute(connection, f"GRANT EXECUTE ON FUNCTION {function} TO %I", reader)
    connection.execute(
        text("UPDATE deployment_settings SET worker_role = :worker, reader_role = :reader"),
        {"worker": worker, "reader": reader},
    )
    undeclared = tuple(sorted(table for table in tables if table not in WORKER_PRIVILEGES))
    return DatabaseRoles(worker, reader, created, tuple(revoked), undeclared)


def revoke(connection: Connection) -> None:
    """Take back every privilege of the recorded roles in the current schema (the roles
    stay: dropping them is the operator's, once no login depends on them)."""
    for name in _recorded(connection):
        if name is not None and _exists(connection, name):
            _revoke_all(connection, name)


def _recorded(connection: Connection) -> tuple[str | None, str | None]:
    row = connection.execute(
        text("SELECT worker_role, reader_role FROM deployment_settings")
    ).one_or_none()
    return (None, None) if row is None else (row[0], row[1])


def _check_names(connection: Connection, worker: str, reader: str, owner: str) -> None:
    for kind, name in (("worker", worker), ("reader", reader)):
        if len(name.encode()) > MAX_NAME_BYTES:
            raise DatabaseRoleError(
                f"the {kind} role's name {name!r} is longer than PostgreSQL's "
                f"{MAX_NAME_BYTES} bytes (a database with a long name makes long default "
                f"names): name the roles with --worker-role and --reader-role"
            )
        if not name:
            raise DatabaseRoleError(f"the {kind} role's name is empty")
    if worker == reader:
        raise DatabaseRoleError(f"the worker and reader roles must differ (both {worker!r})")
    for name in (worker, reader):
        superuser = connection.execute(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = :name"), {"name": name}
        ).scalar_one_or_none()
        if name == owner or superuser:
            raise DatabaseRoleError(
                f"{name!r} is the migrating role or a superuser: the worker and reader roles "
                f"are group roles of their own (their privileges are replaced by each migrate)"
            )


def _exists(connection: Connection, name: str) -> bool:
    return bool(
        connection.execute(
            text("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :name)"), {"name": name}
        ).scalar_one()
    )


def _create_if_missing(connection: Connection, name: str) -> bool:
    """Create ``name`` as a group role; whether this call created it."""
    if _exists(connection, name):
        return False
    # Another database's migration may be creating a role of this name at this very moment
    # (the migration lock is per database): losing that race is no error.
    statement = connection.execute(
        text(
            """SELECT format($do$
DO $create$
BEGIN
    CREATE ROLE %I NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$create$;
$do$, CAST(:name AS text))"""
        ),
        {"name": name},
    ).scalar_one()
    connection.exec_driver_sql(statement)
    return True


def _holds_anything(connection: Connection, name: str) -> bool:
    """Whether ``name`` holds a privilege on the schema or on a table or sequence in it."""
    if not _exists(connection, name):
        return False
    return bool(
        connection.execute(
            text(
                """
SELECT EXISTS (
    SELECT FROM pg_class AS c, aclexplode(c.relacl) AS a
    WHERE c.relnamespace = CAST(current_schema() AS regnamespace)
      AND a.grantee = CAST(CAST(:name AS text) AS regrole)
) OR EXISTS (
    SELECT FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid,
         aclexplode(t.attacl) AS a
    WHERE c.relnamespace = CAST(current_schema() AS regnamespace)
      AND a.grantee = CAST(CAST(:name AS text) AS regrole)
) OR EXISTS (
    SELECT FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
    WHERE n.nspname = current_schema() AND a.grantee = CAST(CAST(:name AS text) AS regrole)
)"""
            ),
            {"name": name},
        ).scalar_one()
    )


def _revoke_all(connection: Connection, name: str) -> None:
    # Revoking a table's privilege revokes it on each of its columns too.
    for statement in (
        "REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I",
        "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM %I",
        "REVOKE ALL ON SCHEMA %I FROM %I",
    ):
        _execute(connection, statement, "current_schema()", name)


def _grant_sequences(connection: Connection, table: str, worker: str) -> None:
    """USAGE (``nextval``) on the sequences that number ``table``'s rows."""
    sequences = connection.execute(
        text(
            """
SELECT s.relname FROM pg_class AS s
JOIN pg_depend AS d ON d.classid = CAST('pg_class' AS regclass) AND d.objid = s.oid
JOIN pg_class AS t ON t.oid = d.refobjid
WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i')
  AND t.relnamespace = CAST(current_schema() AS regnamespace) AND t.relname = :table
"""
        ),
        {"table": table},
    ).scalars()
    for sequence in sequences:
        _execute(connection, "GRANT USAGE ON SEQUENCE %I TO %I", str(sequence), worker)


def _execute(connection: Connection, template: str, *names: str) -> None:
    """Run ``template`` with its ``%I`` identifiers quoted by the server (``format``); the
    literal ``current_schema()`` stands for the schema the migration runs in."""
    arguments = ", ".join(
        "current_schema()" if name == "current_schema()" else f"CAST(:n{index} AS text)"
        for index, name in enumerate(names)
    )
    statement = connection.execute(
        text(f"SELECT format(:template, {arguments})"),
        {"template": template, **{f"n{index}": name for index, name in enumerate(names)}},
    ).scalar_one()
    connection.exec_driver_sql(str(statement))


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))
