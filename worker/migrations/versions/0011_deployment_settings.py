"""Deployment settings: the trust mode, pinned in the database.

One row, written by ``governance migrate`` (``--auth signed|off``, signed unless a mode was
recorded before): a worker whose ``GOVERNANCE_AUTH`` differs refuses to start, so a worker
started in development mode inside a signed deployment cannot take actors as asserted.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE deployment_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    auth text NOT NULL CHECK (auth IN ('signed', 'off')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO deployment_settings (auth) VALUES ('signed');

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'governance_worker') THEN
        GRANT SELECT ON deployment_settings TO governance_worker;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'governance_reader') THEN
        GRANT SELECT ON deployment_settings TO governance_reader;
    END IF;
END
$$;
"""

DOWNGRADE = """
DROP TABLE deployment_settings;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
