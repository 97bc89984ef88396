"""The approval policy: the deployment's versions of it, and the one each request was
submitted under.

``policy_versions`` is append-only: each ``governance policy apply`` adds a version with the
sha256 of its document's RFC 8785 JSON, the parsed document, who applied it and when, and
whether the operator forced it past the satisfiability check. The newest version is the
active one. The database writes each apply's audit row into ``registry_audit`` itself, as it
does for every change of the registry. ``mutation_requests.policy`` holds the request's
policy reference (version, sha256, rule id; NULL in requester mode and before this release).

The workers read the policy and write the requests' reference; they never write a version.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE policy_versions (
    version    integer     PRIMARY KEY CHECK (version >= 1),
    sha256     text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    document   jsonb       NOT NULL,
    applied_by text        NOT NULL DEFAULT session_user,
    applied_at timestamptz NOT NULL DEFAULT now(),
    forced     boolean     NOT NULL DEFAULT false
);

CREATE TRIGGER policy_versions_append_only
    BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION governance_refuse_history_change();
CREATE TRIGGER policy_versions_no_truncate
    BEFORE TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_history_change();

CREATE FUNCTION governance_audit_policy() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO registry_audit (action, details)
    VALUES ('policy_applied',
            jsonb_build_object('version', NEW.version, 'sha256', NEW.sha256,
                               'forced', NEW.forced));
    RETURN NULL;
END;
$$;
CREATE TRIGGER policy_versions_audit
    AFTER INSERT ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION governance_audit_policy();

ALTER TABLE mutation_requests ADD COLUMN policy jsonb;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'governance_worker') THEN
        GRANT SELECT ON policy_versions TO governance_worker;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'governance_reader') THEN
        GRANT SELECT ON policy_versions TO governance_reader;
    END IF;
END
$$;
"""

DOWNGRADE = """
ALTER TABLE mutation_requests DROP COLUMN policy;
DROP TABLE policy_versions;
DROP FUNCTION governance_audit_policy();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
