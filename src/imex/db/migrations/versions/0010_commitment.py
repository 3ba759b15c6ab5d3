"""storage commitment and confirmed delivery

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("confirm", sa.String(length=16), server_default="none", nullable=False))
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("confirm_rounds", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "commitment_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transfer_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("asks", sa.Integer(), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("committed", sa.Integer(), nullable=True),
        sa.Column("failed", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["transfer_id"], ["transfers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("transaction_uid"),
    )
    op.create_index("ix_commitment_requests_transfer_id", "commitment_requests", ["transfer_id"])
    op.create_index("ix_commitment_requests_due", "commitment_requests", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_commitment_requests_due", table_name="commitment_requests")
    op.drop_index("ix_commitment_requests_transfer_id", table_name="commitment_requests")
    op.drop_table("commitment_requests")
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("confirm_rounds")
        batch.drop_column("confirmed_at")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("confirm")
