"""retention: study expiry, per-institution retention, tombstones

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(sa.Column("retention_hours", sa.Integer(), nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("extended_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("retention_hours", sa.Integer(), nullable=True))
        batch.create_index("ix_studies_expires_at", ["expires_at"])
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("modalities", sa.String(length=128), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("first_received_at", sa.DateTime(), nullable=True),
        sa.Column("expired_at", sa.DateTime(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tombstones_study_uid", "tombstones", ["study_uid"])


def downgrade() -> None:
    op.drop_index("ix_tombstones_study_uid", table_name="tombstones")
    op.drop_table("tombstones")
    with op.batch_alter_table("studies") as batch:
        batch.drop_index("ix_studies_expires_at")
        batch.drop_column("retention_hours")
        batch.drop_column("extended_by")
        batch.drop_column("expires_at")
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("retention_hours")
