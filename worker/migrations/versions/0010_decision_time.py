"""A decision's time is the time it was written under: no registry change nor policy version
in between.

Re-execution judges a decision with the registry and the policy as they stood at its
recorded time (0009). A decision written by anyone but the guarded transaction could be
dated at will: an hour ahead, so that a role given meanwhile counts; or back, before a key's
revocation. So a decision is refused unless its time has come (not after the database's
clock) and no registry change of actors or keys and no policy version is stamped at or
after it (re-execution takes the registry and the policy as they stood strictly before a
decision's time: one dated at the very instant of a change would be judged without it).
The guarded transaction holds the registry lock shared from before it reads its clock to its
commit, so nothing is stamped in between and its decisions always pass; the trigger takes
the same lock, so a change cannot be under way unseen.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX registry_audit_at_idx ON registry_audit (at);

-- The workers' role may not read the registry's audit: the check runs as the schema's owner.
CREATE FUNCTION governance_decision_time() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7300, 1);
    IF NEW.occurred_at > clock_timestamp() THEN
        RAISE EXCEPTION 'decision %/% of request % has a decision time (%) the clock has '
            'not reached',
            NEW.revision, NEW.position, NEW.request_id, NEW.occurred_at;
    END IF;
    IF EXISTS (SELECT FROM registry_audit
                WHERE at >= NEW.occurred_at
                  AND action IN ('actor_added', 'actor_updated', 'actor_deleted', 'key_added',
                                 'key_revoked'))
       OR EXISTS (SELECT FROM policy_versions WHERE applied_at >= NEW.occurred_at) THEN
        RAISE EXCEPTION 'decision %/% of request % has a decision time (%) before a registry '
            'change or policy version stamped at or since', NEW.revision, NEW.position,
            NEW.request_id, NEW.occurred_at;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER request_decisions_time
    BEFORE INSERT ON request_decisions
    FOR EACH ROW EXECUTE FUNCTION governance_decision_time();
"""

DOWNGRADE = """
DROP TRIGGER request_decisions_time ON request_decisions;
DROP FUNCTION governance_decision_time();
DROP INDEX registry_audit_at_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
