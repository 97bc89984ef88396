"""Retention: the ledger forgets commands past the idempotency window, the log its oldest
published events past the retention horizon, and says how far it has pruned.

``processed_commands`` gains an index on ``processed_at`` so that pruning the ledger reads
only the rows it deletes. ``log_horizon`` holds, for the outbox, the highest sequence that
pruning may have deleted: a reader asking to replay from below it is told so instead of being
handed a log with a hole at its start.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE INDEX processed_commands_processed_at_idx ON processed_commands (processed_at);
CREATE TABLE log_horizon (
    log            text        PRIMARY KEY,
    pruned_through bigint      NOT NULL,
    pruned_at      timestamptz NOT NULL
);
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TABLE log_horizon;
DROP INDEX processed_commands_processed_at_idx;
"""
    )
