"""A backlog of unpublished events is found through each request's own index only.

The outbox had two partial indexes of unpublished rows: one by sequence (for the relay's
sweep) and one by request and sequence (for the per-command check under the row lock). On a
large table the statistics do not notice a backlog of a few percent, both indexes look like
they return one row, and the planner took the narrower global one for a per-request lookup,
filtering the whole backlog on every command. With the global index gone, a per-request
lookup can only be served by the per-request index; the relay's sweep reads the same index
(every unpublished row, then the oldest first), a cost bounded by the backlog it exists to
work through.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS outbox_events_unpublished_idx")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX outbox_events_unpublished_idx ON outbox_events (sequence) "
        "WHERE published_at IS NULL"
    )
