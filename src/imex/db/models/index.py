"""The index of what the hub holds: patient, study, series, instance. A study also carries the counters
the router uses to see when it is stable, and its retention."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class Patient(Base):
    """A patient as one institution identifies them: local IDs from two hospitals are different people."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("institution_id", "patient_id", "issuer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(320), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")


patients = core_table(Patient)


class Study(Base):
    """A study in the index, with the counters the router uses to see when it is stable."""

    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(128), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    referring_physician: Mapped[str] = mapped_column(String(320), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    # Destination codes found in the routing code attribute of its instances, backslash-separated.
    routing_codes: Mapped[str] = mapped_column(String(200), default="")
    # received_seq grows with every stored instance; the router brings routed_seq up to it.
    received_seq: Mapped[int] = mapped_column(Integer, default=0)
    routed_seq: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # receiving | routed | quarantined
    route_state: Mapped[str] = mapped_column(String(16), default="receiving")
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    # retention (0007): when the study may be deleted, stamped when it is routed, quarantined or delivered;
    # a permitted user may extend it once
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    extended_by: Mapped[str | None] = mapped_column(String(64))
    retention_hours: Mapped[int | None] = mapped_column(Integer)  # set by the routing rule that routed it
    __table_args__ = (
        Index("ix_studies_routing", "route_state", "last_received_at"),
        Index("ix_studies_expires_at", "expires_at"),
    )


studies = core_table(Study)


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(128), default="")
    number: Mapped[int | None] = mapped_column(Integer)
    body_part: Mapped[str] = mapped_column(String(64), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)


series = core_table(Series)


class Instance(Base):
    """One stored SOP instance: where its bytes are and how it reached the hub."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    number: Mapped[int | None] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    source_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    called_aet: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


instances = core_table(Instance)
