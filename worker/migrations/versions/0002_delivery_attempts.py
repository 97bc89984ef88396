"""Deliveries of a command that never completed: how the worker bounds a message that kills it.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE delivery_attempts (
    message_key   text        PRIMARY KEY,
    attempts      integer     NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = "DROP TABLE delivery_attempts;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
