"""Trust: the actor registry and its audit, command proofs, the decision chain, and the
database roles the workers and readers connect with.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTOR_TYPES = "'user','service','system','scheduler','administrator'"
ROLES = "'requester','approver','operator','administrator'"

#: The tables a worker reads and writes, and the ones it may only append to or read.
WORKER_READ_WRITE = (
    "mutation_requests",
    "processed_commands",
    "outbox_events",
    "delivery_attempts",
)
WORKER_RETENTION = ("processed_commands", "delivery_attempts")
WORKER_APPEND_ONLY = ("request_decisions", "command_proofs")
WORKER_READ_ONLY = ("actors", "actor_keys")

UPGRADE = f"""
-- The refusal names the table it guards, now that it guards more than one.
CREATE OR REPLACE FUNCTION governance_refuse_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TABLE actors (
    actor_id   text        PRIMARY KEY,
    name       text,
    type       text        NOT NULL CHECK (type IN ({ACTOR_TYPES})),
    roles      text[]      NOT NULL DEFAULT '{{}}' CHECK (roles <@ ARRAY[{ROLES}]::text[]),
    groups     text[]      NOT NULL DEFAULT '{{}}',
    active     boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE actor_keys (
    key_id     text        PRIMARY KEY,
    actor_id   text        NOT NULL REFERENCES actors (actor_id),
    -- 32 bytes in base64url without padding are exactly 43 characters.
    public_key text        NOT NULL UNIQUE CHECK (public_key ~ '^[A-Za-z0-9_-]{{43}}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX actor_keys_actor_idx ON actor_keys (actor_id, created_at);

CREATE TABLE registry_audit (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    by       text        NOT NULL DEFAULT session_user,
    action   text        NOT NULL,
    actor_id text,
    key_id   text,
    details  jsonb       NOT NULL DEFAULT '{{}}'
);
CREATE INDEX registry_audit_actor_idx ON registry_audit (actor_id, id);

-- Old signatures must stay verifiable: a key is never deleted, and the only change it ever
-- takes is its revocation, once.
CREATE FUNCTION governance_guard_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'actor keys are never deleted, only revoked (key %)', OLD.key_id;
    END IF;
    IF OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'key % is revoked for good', OLD.key_id;
    END IF;
    IF NEW.revoked_at IS NULL
       OR (NEW.key_id, NEW.actor_id, NEW.public_key, NEW.created_at)
          IS DISTINCT FROM (OLD.key_id, OLD.actor_id, OLD.public_key, OLD.created_at) THEN
        RAISE EXCEPTION 'an actor key can only be revoked (key %)', OLD.key_id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER actor_keys_immutable
    BEFORE UPDATE OR DELETE ON actor_keys
    FOR EACH ROW EXECUTE FUNCTION governance_guard_actor_key();

CREATE FUNCTION governance_touch_actor() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER actors_touch
    BEFORE UPDATE ON actors
    FOR EACH ROW EXECUTE FUNCTION governance_touch_actor();

-- The audit is written by the database itself, in the changing transaction: no client can
-- change the registry without leaving its row, whichever code path (or psql) it takes.
CREATE FUNCTION governance_audit_actor() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (action, actor_id, details)
        VALUES ('actor_added', NEW.actor_id,
                to_jsonb(NEW) - 'actor_id' - 'created_at' - 'updated_at');
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT coalesce(jsonb_object_agg(n.key, jsonb_build_object('from', o.value, 'to', n.value)),
                        '{{}}')
          INTO changes
          FROM jsonb_each(to_jsonb(NEW) - 'updated_at') AS n
          JOIN jsonb_each(to_jsonb(OLD) - 'updated_at') AS o USING (key)
         WHERE n.value IS DISTINCT FROM o.value;
        INSERT INTO registry_audit (action, actor_id, details)
        VALUES ('actor_updated', OLD.actor_id, changes);
    ELSE
        INSERT INTO registry_audit (action, actor_id, details)
        VALUES ('actor_deleted', OLD.actor_id, to_jsonb(OLD) - 'actor_id');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER actors_audit
    AFTER INSERT OR UPDATE OR DELETE ON actors
    FOR EACH ROW EXECUTE FUNCTION governance_audit_actor();

CREATE FUNCTION governance_audit_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (action, actor_id, key_id, details)
        VALUES ('key_added', NEW.actor_id, NEW.key_id,
                jsonb_build_object('public_key', NEW.public_key));
    ELSE
        INSERT INTO registry_audit (action, actor_id, key_id, details)
        VALUES ('key_revoked', NEW.actor_id, NEW.key_id,
                jsonb_build_object('revoked_at', NEW.revoked_at));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER actor_keys_audit
    AFTER INSERT OR UPDATE ON actor_keys
    FOR EACH ROW EXECUTE FUNCTION governance_audit_actor_key();

-- The audit itself is append-only, and TRUNCATE (which fires no row trigger) is refused on
-- everything whose rows may not silently disappear.
CREATE TRIGGER registry_audit_append_only
    BEFORE UPDATE OR DELETE ON registry_audit
    FOR EACH ROW EXECUTE FUNCTION governance_refuse_history_change();
CREATE TRIGGER registry_audit_no_truncate
    BEFORE TRUNCATE ON registry_audit
    FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_history_change();
CREATE TRIGGER actors_no_truncate
    BEFORE TRUNCATE ON actors
    FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_history_change();
CREATE TRIGGER actor_keys_no_truncate
    BEFORE TRUNCATE ON actor_keys
    FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_history_change();

-- NULL for decisions written before the chain existed.
ALTER TABLE request_decisions ADD COLUMN chain_hash text;
ALTER TABLE mutation_requests ADD COLUMN chain_head text;

CREATE TABLE command_proofs (
    request_id     text   NOT NULL REFERENCES mutation_requests (request_id),
    revision       bigint NOT NULL,
    command_id     text   NOT NULL,
    key_id         text,
    signed_command text   NOT NULL,
    PRIMARY KEY (request_id, revision)
);
CREATE TRIGGER command_proofs_append_only
    BEFORE UPDATE OR DELETE ON command_proofs
    FOR EACH ROW EXECUTE FUNCTION governance_refuse_history_change();
CREATE TRIGGER command_proofs_no_truncate
    BEFORE TRUNCATE ON command_proofs
    FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_history_change();
"""


def _create_role(name: str) -> str:
    # Roles belong to the cluster, not to this database: another database's migration may
    # have created it already, or be creating it at this very moment (the migration lock is
    # per database), in which case our CREATE loses the race on the catalog's unique index.
    return f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
        BEGIN
            CREATE ROLE {name} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
"""


def _tables(names: tuple[str, ...]) -> str:
    return ", ".join(names)


# In the schema the migration runs in, whatever its name: the tables are created there.
GRANTS = f"""
{_create_role("governance_worker")}
{_create_role("governance_reader")}
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO governance_worker, governance_reader',
                   current_schema());
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO governance_worker',
                   current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO governance_reader',
                   current_schema());
END
$$;
GRANT SELECT, INSERT, UPDATE ON {_tables(WORKER_READ_WRITE)} TO governance_worker;
GRANT DELETE ON {_tables(WORKER_RETENTION)} TO governance_worker;
GRANT SELECT, INSERT ON {_tables(WORKER_APPEND_ONLY)} TO governance_worker;
GRANT SELECT ON {_tables(WORKER_READ_ONLY)} TO governance_worker;
"""

# The roles stay: they are shared by every database of the cluster, and other databases may
# still grant them (and be using them). Only this database's grants are taken back.
DOWNGRADE = """
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'governance_worker') THEN
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM governance_worker',
                       current_schema());
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM governance_worker',
                       current_schema());
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM governance_worker', current_schema());
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'governance_reader') THEN
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM governance_reader',
                       current_schema());
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM governance_reader', current_schema());
    END IF;
END
$$;
DROP TABLE command_proofs;
ALTER TABLE mutation_requests DROP COLUMN chain_head;
ALTER TABLE request_decisions DROP COLUMN chain_hash;
DROP TABLE registry_audit;
DROP TABLE actor_keys;
DROP TABLE actors;
DROP FUNCTION governance_audit_actor_key();
DROP FUNCTION governance_audit_actor();
DROP FUNCTION governance_touch_actor();
DROP FUNCTION governance_guard_actor_key();
CREATE OR REPLACE FUNCTION governance_refuse_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'request_decisions is append-only';
END;
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(GRANTS)


def downgrade() -> None:
    op.execute(DOWNGRADE)
