"""Radiology reports from a RIS (HL7 v2): each version received, its delivery outbox and the queries that
ask a RIS for a missing report."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class Report(Base):
    """One version of a radiology report as a RIS sent it; attached to its study when that is known.
    A later version of the same accession marks the earlier ones superseded."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("institution_id", "control_id"),
        Index("ix_reports_match", "institution_id", "accession_number"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="RESTRICT"))
    ris_endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("ris_endpoints.id", ondelete="SET NULL"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    control_id: Mapped[str] = mapped_column(String(64))  # MSH-10 of the message that carried it
    hl7_version: Mapped[str] = mapped_column(String(8), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    identifiers: Mapped[str] = mapped_column(Text, default="")  # every PID-3 value, space-separated
    nhs_number: Mapped[str] = mapped_column(String(16), default="")
    patient_name: Mapped[str] = mapped_column(String(320), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")  # from a ZDS segment, when sent
    procedure: Mapped[str] = mapped_column(String(200), default="")
    # preliminary | final | corrected | addendum
    status: Mapped[str] = mapped_column(String(16))
    clinician: Mapped[str] = mapped_column(String(320), default="")
    observed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    text: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(8), default="push")  # push | query
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))  # of its DICOM form (SR), made on receipt
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    matched_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


reports = core_table(Report)


class ReportDelivery(Base):
    """Outbox of report deliveries: one per (report version, destination node, form), written in the same
    transaction as the transfer's delivery or the report's arrival, sent and retried by the hub."""

    __tablename__ = "report_deliveries"
    __table_args__ = (
        UniqueConstraint("report_id", "destination_node_id", "kind"),
        Index("ix_report_deliveries_queue", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    destination_node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # hl7 (to the institution's RIS) | dicom (SR to the node)
    # pending | sent | failed | cancelled (a newer version replaced it before it went)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    # what this delivery replaces at the destination: the earlier message's control ID or SR's SOP UID
    supersedes: Mapped[str] = mapped_column(String(64), default="")
    message_id: Mapped[str] = mapped_column(String(64), default="")  # control ID or SOP UID sent
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


report_deliveries = core_table(ReportDelivery)


class ReportQuery(Base):
    """Asking the source RIS for the report of a study that has none yet, retried on a schedule."""

    __tablename__ = "report_queries"
    __table_args__ = (Index("ix_report_queries_due", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    # pending | found | given-up
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


report_queries = core_table(ReportQuery)
