"""The durable delivery queue: one transfer per (study, destination node), its instances and its history.
It lives in the database so that nothing depends on one process's memory."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class Transfer(Base):
    """One study going to one destination node: the unit of the durable delivery queue."""

    __tablename__ = "transfers"
    __table_args__ = (
        UniqueConstraint("study_id", "destination_node_id"),
        Index("ix_transfers_queue", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    destination_node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="RESTRICT"), index=True)
    # pending | sending | delivered | confirmed | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    instances_total: Mapped[int] = mapped_column(Integer, default=0)
    instances_sent: Mapped[int] = mapped_column(Integer, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # priority transfers (routing/priority.py): who the study is for, and when an overdue emergency alerted
    recipient: Mapped[str | None] = mapped_column(String(200))
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    escalated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # confirmed delivery (0010): when the destination confirmed holding every instance (state `confirmed`),
    # and how many times instances it did not hold were sent again
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    confirm_rounds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


transfers = core_table(Transfer)


class TransferItem(Base):
    """One instance of a transfer; `sent` is committed after each confirmed C-STORE, so a restart resends
    only what was not confirmed."""

    __tablename__ = "transfer_items"
    __table_args__ = (
        UniqueConstraint("transfer_id", "instance_id"),
        Index("ix_transfer_items_state", "transfer_id", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    # pending | sent | failed
    state: Mapped[str] = mapped_column(String(8), default="pending")
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


items = core_table(TransferItem)


class TransferEvent(Base):
    """What happened to a transfer and when, for `imex transfers show` and the operators' history."""

    __tablename__ = "transfer_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


events = core_table(TransferEvent)
