"""The approvers of a group, by index: who may decide a group's requirement now
(``governance policy explain``) looks the group's members up in ``actors.groups``.

``governance pending --for`` finds an approver's requests through the GIN index on the
pending requests' requirements (0001) and needs nothing more.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX actors_groups_idx ON actors USING gin (groups)")


def downgrade() -> None:
    op.execute("DROP INDEX actors_groups_idx")
