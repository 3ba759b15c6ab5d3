"""HL7 reports and RIS endpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ris_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("facilities", sa.String(length=400), nullable=False),
        sa.Column("peer_host", sa.String(length=255), nullable=False),
        sa.Column("receiving_application", sa.String(length=64), nullable=False),
        sa.Column("query_template", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_ris_endpoints_institution_id"), "ris_endpoints", ["institution_id"], unique=False)
    op.create_table(
        "report_queries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id"),
    )
    op.create_index("ix_report_queries_due", "report_queries", ["state", "next_attempt_at"], unique=False)
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("ris_endpoint_id", sa.Integer(), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("control_id", sa.String(length=64), nullable=False),
        sa.Column("hl7_version", sa.String(length=8), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("identifiers", sa.Text(), nullable=False),
        sa.Column("nhs_number", sa.String(length=16), nullable=False),
        sa.Column("patient_name", sa.String(length=320), nullable=False),
        sa.Column("birth_date", sa.String(length=8), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("procedure", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("clinician", sa.String(length=320), nullable=False),
        sa.Column("observed_at", sa.DateTime(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("matched_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["ris_endpoint_id"], ["ris_endpoints.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("institution_id", "control_id"),
    )
    op.create_index("ix_reports_match", "reports", ["institution_id", "accession_number"], unique=False)
    op.create_index(op.f("ix_reports_study_id"), "reports", ["study_id"], unique=False)
    op.create_table(
        "report_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("destination_node_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("supersedes", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["destination_node_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "destination_node_id", "kind"),
    )
    op.create_index(
        op.f("ix_report_deliveries_destination_node_id"), "report_deliveries", ["destination_node_id"], unique=False
    )
    op.create_index("ix_report_deliveries_queue", "report_deliveries", ["state", "next_attempt_at"], unique=False)
    op.create_index(op.f("ix_report_deliveries_report_id"), "report_deliveries", ["report_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_report_deliveries_report_id"), table_name="report_deliveries")
    op.drop_index("ix_report_deliveries_queue", table_name="report_deliveries")
    op.drop_index(op.f("ix_report_deliveries_destination_node_id"), table_name="report_deliveries")
    op.drop_table("report_deliveries")
    op.drop_index(op.f("ix_reports_study_id"), table_name="reports")
    op.drop_index("ix_reports_match", table_name="reports")
    op.drop_table("reports")
    op.drop_index("ix_report_queries_due", table_name="report_queries")
    op.drop_table("report_queries")
    op.drop_index(op.f("ix_ris_endpoints_institution_id"), table_name="ris_endpoints")
    op.drop_table("ris_endpoints")
