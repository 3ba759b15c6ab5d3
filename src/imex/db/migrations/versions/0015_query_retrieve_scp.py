"""query/retrieve from the hub: which of C-FIND, C-MOVE and C-GET each node may use on the hub's listener

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("allow_find", sa.Boolean(), server_default="1", nullable=False))
        batch.add_column(sa.Column("allow_move", sa.Boolean(), server_default="1", nullable=False))
        batch.add_column(sa.Column("allow_get", sa.Boolean(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("allow_get")
        batch.drop_column("allow_move")
        batch.drop_column("allow_find")
