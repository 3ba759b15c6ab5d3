"""Retention: what was deleted, when and why, kept after the study itself is gone."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class Tombstone(Base):
    """What the retention job (or an operator) deleted, when and why: the study is gone, this row and the
    audit trail stay."""

    __tablename__ = "tombstones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    institution_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: it outlives the study
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_received_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    expired_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")


tombstones = core_table(Tombstone)
