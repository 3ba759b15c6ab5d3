"""The audit trail: who did what, when, to which patient and study. Append-only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class AuditEvent(Base):
    """Who did what, when, from where, to which patient and study, and how it ended. Append-only: the
    database refuses UPDATE and DELETE on this table (see migration 0002)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_institution_at", "institution_id", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="success")  # success | failure | denied
    user_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: the trail outlives the user
    username: Mapped[str] = mapped_column(String(64), default="")
    institution_id: Mapped[int | None] = mapped_column(Integer)
    ip: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


audit_events = core_table(AuditEvent)
