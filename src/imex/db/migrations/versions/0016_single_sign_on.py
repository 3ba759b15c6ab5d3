"""single sign-on: accounts managed by an identity provider or directory, certificate subjects, OpenID
Connect sign-ins under way, and per-institution password and certificate policies

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("identity_provider", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("certificate_subject", sa.String(length=400), nullable=True))
        batch.create_unique_constraint("uq_users_identity_provider_subject", ["identity_provider", "subject"])
        batch.create_unique_constraint("uq_users_certificate_subject", ["certificate_subject"])
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(sa.Column("local_passwords", sa.Boolean(), server_default="1", nullable=False))
        batch.add_column(sa.Column("require_certificate", sa.Boolean(), server_default="0", nullable=False))
    op.create_table(
        "sso_logins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("return_to", sa.String(length=400), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("state"),
    )


def downgrade() -> None:
    op.drop_table("sso_logins")
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("require_certificate")
        batch.drop_column("local_passwords")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_certificate_subject", type_="unique")
        batch.drop_constraint("uq_users_identity_provider_subject", type_="unique")
        batch.drop_column("certificate_subject")
        batch.drop_column("subject")
        batch.drop_column("identity_provider")
