"""Database roles per database: ``<database>_worker`` and ``<database>_reader``.

The roles of migration 0003 (``governance_worker``, ``governance_reader``) belong to the
whole server: made for one database they gave the same privileges in every other database
migrated on it, and later tables were never granted to them. From here on each database has
group roles of its own, named after it unless ``governance migrate --worker-role/--reader-role``
names them, with exactly the privileges :mod:`worker.database_roles` declares; the names are
recorded in ``deployment_settings``, and the cluster-wide roles lose every privilege they held
in this database (they are not dropped: other databases may still use them).

``governance migrate`` grants the declaration again after every upgrade, so a table added by a
later migration is granted on the run that adds it.

Revision ID: 0012
Revises: 0011
"""

from alembic import context, op

from worker import database_roles

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE deployment_settings ADD COLUMN worker_role text, ADD COLUMN reader_role text"
    )
    attributes = context.config.attributes
    granted = database_roles.grant(
        op.get_bind(),
        worker=attributes.get("worker_role"),
        reader=attributes.get("reader_role"),
    )
    # What ``governance migrate`` reports: it grants again after the upgrade, finding the
    # roles this revision created already there.
    attributes["database_roles"] = granted


def downgrade() -> None:
    # The roles stay (a login may still be their member); only their privileges here go.
    database_roles.revoke(op.get_bind())
    op.execute("ALTER TABLE deployment_settings DROP COLUMN worker_role, DROP COLUMN reader_role")
