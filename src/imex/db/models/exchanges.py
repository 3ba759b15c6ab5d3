"""The exchange workflows: requests for a patient's images, transactions (one or more studies sent from one
institution to another, with a message thread and attached documents) and retrievals (C-MOVEs the hub asks
of an institution's PACS, durable so that a restart resumes them)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow

REQUEST_STATES = ("open", "accepted", "fulfilled", "declined", "expired", "cancelled")
RETRIEVAL_STATES = ("pending", "moving", "done", "failed", "cancelled")


class ExchangeTransaction(Base):
    """Studies sent together from one institution to another, with who sent them, for whom, and why;
    the transfers of its studies to the destination institution's nodes carry the images."""

    __tablename__ = "exchange_transactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # push (studies already at the hub), preauthorised (C-MOVEd from the sender's PACS), request
    # (fulfils an image request), upload (sent from the browser)
    kind: Mapped[str] = mapped_column(String(16), default="push")
    subject: Mapped[str] = mapped_column(String(200), default="")
    sender_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    source_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)
    destination_institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    # a node of the destination institution, when the sender chose one; otherwise its destination nodes
    destination_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    recipient: Mapped[str | None] = mapped_column(String(200))
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


transactions = core_table(ExchangeTransaction)


class TransactionStudy(Base):
    """A study of a transaction, by UID: it may still be on its way from the sender's PACS."""

    __tablename__ = "transaction_studies"
    __table_args__ = (UniqueConstraint("transaction_id", "study_uid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("exchange_transactions.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


transaction_studies = core_table(TransactionStudy)


class TransactionMessage(Base):
    """One message of a transaction's thread, seen by both institutions' permitted users."""

    __tablename__ = "transaction_messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("exchange_transactions.id", ondelete="CASCADE"), index=True)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    author_name: Mapped[str] = mapped_column(String(200), default="")
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


transaction_messages = core_table(TransactionMessage)


class TransactionAttachment(Base):
    """A document attached to a transaction (a referral letter, a PDF report, a photograph): its bytes
    are in the blob store under `blob_key`; `scan_state` is what the virus-scanning hook said."""

    __tablename__ = "transaction_attachments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("exchange_transactions.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("transaction_messages.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(64))
    uploaded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    uploaded_by: Mapped[str] = mapped_column(String(200), default="")
    # clean | unscanned (no scanner configured)
    scan_state: Mapped[str] = mapped_column(String(16), default="unscanned")
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


transaction_attachments = core_table(TransactionAttachment)


class ImageRequest(Base):
    """A request from one institution for a patient's images held by another, with its state:
    open -> accepted -> fulfilled, or declined (with a reason), expired or cancelled."""

    __tablename__ = "image_requests"
    __table_args__ = (Index("ix_image_requests_source_state", "source_institution_id", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requester_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    requester_name: Mapped[str] = mapped_column(String(200), default="")
    requesting_institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id", ondelete="CASCADE"), index=True
    )
    source_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"))
    # the patient: an NHS number, and/or name and date of birth; the source's own IDs when known
    nhs_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    date_from: Mapped[str] = mapped_column(String(8), default="")
    date_to: Mapped[str] = mapped_column(String(8), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    recipient: Mapped[str | None] = mapped_column(String(200))
    # a user of the requesting institution told directly when the images arrive (the transfer's recipient)
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    destination_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    decline_reason: Mapped[str | None] = mapped_column(Text)
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("exchange_transactions.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    fulfilled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


image_requests = core_table(ImageRequest)


class RequestEvent(Base):
    """The history of a request: who did what to it and when."""

    __tablename__ = "request_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("image_requests.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200), default="")
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


request_events = core_table(RequestEvent)


class Retrieval(Base):
    """A study the hub asks a node to C-MOVE to the hub: for a transaction (`purpose` transfer: route it
    on when it arrives) or for viewing before import (`purpose` view: kept in the short-lived cache,
    never routed). A row, not a thread, so that a restart resumes it."""

    __tablename__ = "retrievals"
    __table_args__ = (Index("ix_retrievals_queue", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(16), default="transfer")
    transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_transactions.id", ondelete="CASCADE"), index=True
    )
    request_id: Mapped[int | None] = mapped_column(ForeignKey("image_requests.id", ondelete="SET NULL"))
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    # the institution on whose behalf: for `view`, whose users may open the cached study
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    warning: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


retrievals = core_table(Retrieval)
