"""SCIM provisioning: a person's given and family names as their directory sends them, so that a change
to one of them (a SCIM PATCH of name.givenName) can rebuild the full name without guessing where one
name ends and the other begins

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("given_name", sa.String(length=100), server_default="", nullable=False))
        batch.add_column(sa.Column("family_name", sa.String(length=100), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("family_name")
        batch.drop_column("given_name")
