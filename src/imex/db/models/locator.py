"""The patient imaging locator: which institution holds which study for an NHS number, how each
institution's PACS is swept, and who may discover an institution's holdings."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow

ENTRY_SOURCES = ("hub", "sweep", "hl7")
DISCOVERABILITY = ("none", "everyone", "restricted")


class LocatorEntry(Base):
    """One study an institution holds, for one NHS number: what a locator search shows. Rewritten whenever
    the hub, a sweep or a RIS tells of the study again; `seen_at` says how fresh it is."""

    __tablename__ = "locator_entries"
    __table_args__ = (
        UniqueConstraint("institution_id", "study_uid"),
        Index("ix_locator_entries_nhs", "nhs_number", "institution_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"))
    # the node the study can be retrieved from (C-MOVE), when known
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    nhs_number: Mapped[str] = mapped_column(String(10))
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(String(64))
    accession: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")  # backslash-separated
    description: Mapped[str] = mapped_column(String(200), default="")
    body_part: Mapped[str] = mapped_column(String(128), default="")  # backslash-separated
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    # the series with their instance counts, as JSON ([{"uid", "modality", "number", "description",
    # "body_part", "instances"}]), when known
    series_json: Mapped[str] = mapped_column(Text, default="")
    # hub (passed through the hub) | sweep (C-FIND of the institution's PACS) | hl7 (RIS notification)
    source: Mapped[str] = mapped_column(String(8))
    first_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


locator_entries = core_table(LocatorEntry)


class LocatorSweep(Base):
    """How and when the hub sweeps one node (an institution's PACS) with C-FIND, and how far it got: the
    study date up to which it has indexed, the next run, and the failures that pushed that run back."""

    __tablename__ = "locator_sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    interval_minutes: Mapped[int] = mapped_column(Integer, default=60)
    lookback_days: Mapped[int] = mapped_column(Integer, default=365)
    queries_per_minute: Mapped[int] = mapped_column(Integer, default=30)
    swept_to: Mapped[str] = mapped_column(String(8), default="")  # YYYYMMDD indexed up to (inclusive)
    next_run_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed runs in a row
    last_error: Mapped[str | None] = mapped_column(Text)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_ok_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    studies_seen: Mapped[int] = mapped_column(Integer, default=0)  # by the last successful run


locator_sweeps = core_table(LocatorSweep)


class LocatorPolicy(Base):
    """Whether an institution's holdings are discoverable: by nobody (`none`, also when there is no row),
    by everyone, or (`restricted`) by its named partner institutions and the members of named networks."""

    __tablename__ = "locator_policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), unique=True)
    mode: Mapped[str] = mapped_column(String(16), default="none")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")


locator_policies = core_table(LocatorPolicy)


class LocatorPartner(Base):
    """A partner institution that may discover an institution's holdings (mode `restricted`)."""

    __tablename__ = "locator_partners"
    __table_args__ = (UniqueConstraint("institution_id", "partner_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)


locator_partners = core_table(LocatorPartner)


class LocatorNetwork(Base):
    """A named group of institutions (a stroke network, a cancer alliance)."""

    __tablename__ = "locator_networks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


locator_networks = core_table(LocatorNetwork)


class LocatorNetworkMember(Base):
    __tablename__ = "locator_network_members"
    __table_args__ = (UniqueConstraint("network_id", "institution_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("locator_networks.id", ondelete="CASCADE"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)


locator_network_members = core_table(LocatorNetworkMember)


class LocatorSharedNetwork(Base):
    """A network whose members may discover an institution's holdings (mode `restricted`)."""

    __tablename__ = "locator_shared_networks"
    __table_args__ = (UniqueConstraint("institution_id", "network_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("locator_networks.id", ondelete="CASCADE"), index=True)


locator_shared_networks = core_table(LocatorSharedNetwork)


class LocatorMark(Base):
    """A named watermark of a periodic job (the hub indexer: the last study change it indexed)."""

    __tablename__ = "locator_marks"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_id: Mapped[int] = mapped_column(Integer, default=0)


locator_marks = core_table(LocatorMark)
