"""Observability: each outbox event keeps the trace context of the command that caused it,
and the worker's periodic tasks say when they last ran.

``outbox_events.trace_context`` holds the W3C ``traceparent`` of the worker's span for the
command (NULL when tracing is off), so that an event the relay publishes later still carries
it as a header and a subscriber can link its span to the command. ``maintenance_runs`` holds
one row per periodic task (``relay``, ``expiry``): when it last finished and what it did,
which ``governance status`` reports.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE outbox_events ADD COLUMN trace_context text;
CREATE TABLE maintenance_runs (
    task        text        PRIMARY KEY,
    finished_at timestamptz NOT NULL,
    handled     bigint      NOT NULL
);
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TABLE maintenance_runs;
ALTER TABLE outbox_events DROP COLUMN trace_context;
"""
    )
