"""priority transfers: named recipients, escalation, institutions that require a recipient

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("recipient", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("recipient_user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("escalated_at", sa.DateTime(), nullable=True))
        batch.create_foreign_key(
            "fk_transfers_recipient_user_id_users", "users", ["recipient_user_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(sa.Column("require_recipient", sa.Boolean(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("require_recipient")
    with op.batch_alter_table("transfers") as batch:
        batch.drop_constraint("fk_transfers_recipient_user_id_users", type_="foreignkey")
        batch.drop_column("escalated_at")
        batch.drop_column("recipient_user_id")
        batch.drop_column("recipient")
