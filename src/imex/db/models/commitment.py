"""Confirmed delivery: one row per time the hub asks a destination whether it holds a transfer's instances
(a Storage Commitment request, or a C-FIND count). Durable, so a hub killed while waiting asks again after
restart, and an answer arriving on a new association (to any process) finds what it answers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class CommitmentRequest(Base):
    """One question to a destination about one transfer, and its answer."""

    __tablename__ = "commitment_requests"
    __table_args__ = (Index("ix_commitment_requests_due", "state", "due_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # commitment | count
    # the Transaction UID of the N-ACTION (for count: an identifier of this question)
    transaction_uid: Mapped[str] = mapped_column(String(64), unique=True)
    # due (to ask at due_at) | asking (a process holds it until lease_until) | waiting (asked; the answer may
    # come on a new association until due_at) | answered | expired | superseded
    state: Mapped[str] = mapped_column(String(16), default="due")
    due_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    asks: Mapped[int] = mapped_column(Integer, default=0)  # times the N-ACTION or C-FIND was sent
    instances: Mapped[int] = mapped_column(Integer, default=0)  # instances asked about
    committed: Mapped[int | None] = mapped_column(Integer)  # held by the destination, per its answer
    failed: Mapped[int | None] = mapped_column(Integer)  # reported failed or missing
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    requested_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    answered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    detail: Mapped[str] = mapped_column(Text, default="")


commitment_requests = core_table(CommitmentRequest)
