"""sharing folders (emergency and elective folders, their institutions, members and studies) and
storage quotas per institution

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(sa.Column("quota_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "folders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("alias", sa.String(length=16), nullable=True),
        sa.Column("retention_hours", sa.Integer(), nullable=False),
        sa.Column("owner_institution_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["owner_institution_id"], ["institutions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alias"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "folder_institutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["folder_id"], ["folders.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("folder_id", "institution_id"),
    )
    op.create_index("ix_folder_institutions_folder_id", "folder_institutions", ["folder_id"])
    op.create_index("ix_folder_institutions_institution_id", "folder_institutions", ["institution_id"])
    op.create_table(
        "folder_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["folder_id"], ["folders.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("folder_id", "user_id"),
    )
    op.create_index("ix_folder_members_folder_id", "folder_members", ["folder_id"])
    op.create_index("ix_folder_members_user_id", "folder_members", ["user_id"])
    op.create_table(
        "folder_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["folder_id"], ["folders.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("folder_id", "study_id"),
    )
    op.create_index("ix_folder_studies_folder_id", "folder_studies", ["folder_id"])
    op.create_index("ix_folder_studies_study_id", "folder_studies", ["study_id"])
    op.create_index("ix_folder_studies_expires_at", "folder_studies", ["expires_at"])


def downgrade() -> None:
    for table in ("folder_studies", "folder_members", "folder_institutions", "folders"):
        op.drop_table(table)
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("quota_bytes")
