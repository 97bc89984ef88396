"""Proof of substance: the registry's history in decision order, a request row its decisions
must account for, and actors with the ``worker`` role (the key that signs events).

- **Registry changes are ordered against decisions.** Every registry change takes an
  exclusive transaction-scoped advisory lock before its audit row is written, and stamps
  that row with the clock *after* the lock; every guarded transaction holds the same lock
  shared from before it reads its clock to its commit. So a decision time lies strictly
  between two registry changes, and the registry a decision was made under is the audit
  replayed up to that time: what ``governance verify`` re-executes with. A policy version
  is stamped the same way, so the version a submit was decided under is the last one
  applied before it.
- **A request row changes only with its decisions.** A deferred constraint trigger checks,
  at commit, that an inserted or updated row is at a new revision whose decisions were
  written, with a kept command, and whose last decision's chain hash is the row's chain
  head. Setting a status by hand fails. Defence in depth: re-execution is the proof.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The two-key advisory lock (a key space apart from the requests' one-key locks).
REGISTRY_LOCK = "7300, 1"

ROLES = "'requester','approver','operator','administrator','worker'"
OLD_ROLES = "'requester','approver','operator','administrator'"

UPGRADE = f"""
ALTER TABLE actors DROP CONSTRAINT actors_roles_check;
ALTER TABLE actors ADD CONSTRAINT actors_roles_check CHECK (roles <@ ARRAY[{ROLES}]::text[]);

CREATE OR REPLACE FUNCTION governance_audit_actor() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock({REGISTRY_LOCK});
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (at, action, actor_id, details)
        VALUES (clock_timestamp(), 'actor_added', NEW.actor_id,
                to_jsonb(NEW) - 'actor_id' - 'created_at' - 'updated_at');
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT coalesce(jsonb_object_agg(n.key, jsonb_build_object('from', o.value, 'to', n.value)),
                        '{{}}')
          INTO changes
          FROM jsonb_each(to_jsonb(NEW) - 'updated_at') AS n
          JOIN jsonb_each(to_jsonb(OLD) - 'updated_at') AS o USING (key)
         WHERE n.value IS DISTINCT FROM o.value;
        INSERT INTO registry_audit (at, action, actor_id, details)
        VALUES (clock_timestamp(), 'actor_updated', OLD.actor_id, changes);
    ELSE
        INSERT INTO registry_audit (at, action, actor_id, details)
        VALUES (clock_timestamp(), 'actor_deleted', OLD.actor_id, to_jsonb(OLD) - 'actor_id');
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION governance_audit_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({REGISTRY_LOCK});
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'key_added', NEW.actor_id, NEW.key_id,
                jsonb_build_object('public_key', NEW.public_key));
    ELSE
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'key_revoked', NEW.actor_id, NEW.key_id,
                jsonb_build_object('revoked_at', NEW.revoked_at));
    END IF;
    RETURN NULL;
END;
$$;

-- A policy version takes effect in the same order against decisions as a registry change.
CREATE FUNCTION governance_stamp_policy_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({REGISTRY_LOCK});
    NEW.applied_at := clock_timestamp();
    RETURN NEW;
END;
$$;
CREATE TRIGGER policy_versions_stamp
    BEFORE INSERT ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION governance_stamp_policy_version();

CREATE FUNCTION governance_request_accounted_for() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    current mutation_requests%ROWTYPE;
    last_hash text;
BEGIN
    -- Deferred: judge the row as it stands at commit, not each intermediate version.
    SELECT * INTO current FROM mutation_requests WHERE request_id = NEW.request_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND current.revision <= OLD.revision THEN
        RAISE EXCEPTION 'request % changed without a new revision (still %)',
            NEW.request_id, OLD.revision;
    END IF;
    IF NOT EXISTS (SELECT FROM command_proofs
                   WHERE request_id = NEW.request_id AND revision = current.revision) THEN
        RAISE EXCEPTION 'request % is at revision % with no command kept for it',
            NEW.request_id, current.revision;
    END IF;
    SELECT chain_hash INTO last_hash FROM request_decisions
     WHERE request_id = NEW.request_id
     ORDER BY revision DESC, position DESC LIMIT 1;
    IF NOT FOUND OR NOT EXISTS (
        SELECT FROM request_decisions
         WHERE request_id = NEW.request_id AND revision = current.revision) THEN
        RAISE EXCEPTION 'request % is at revision % with no decisions for it',
            NEW.request_id, current.revision;
    END IF;
    IF EXISTS (SELECT FROM request_decisions
               WHERE request_id = NEW.request_id AND revision > current.revision) THEN
        RAISE EXCEPTION 'request % has decisions beyond its revision %',
            NEW.request_id, current.revision;
    END IF;
    IF last_hash IS DISTINCT FROM current.chain_head THEN
        RAISE EXCEPTION 'request % has a chain head that is not its last decision''s',
            NEW.request_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER mutation_requests_accounted_for
    AFTER INSERT OR UPDATE ON mutation_requests
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION governance_request_accounted_for();
"""

DOWNGRADE = f"""
DROP TRIGGER policy_versions_stamp ON policy_versions;
DROP FUNCTION governance_stamp_policy_version();
DROP TRIGGER mutation_requests_accounted_for ON mutation_requests;
DROP FUNCTION governance_request_accounted_for();
ALTER TABLE actors DROP CONSTRAINT actors_roles_check;
ALTER TABLE actors ADD CONSTRAINT actors_roles_check
    CHECK (roles <@ ARRAY[{OLD_ROLES}]::text[]);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
