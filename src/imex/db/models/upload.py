"""Uploads from the browser: an upload is a row plus a staging folder (under upload.staging_dir) holding its
files under names the hub chooses, never the names the browser sent. Each file that arrived (or was
unpacked from a zip) is an UploadFile row saying what it is: an instance (with the attributes the review
shows), a DICOMDIR, a zip, or a file skipped with the reason."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow

# open: files arriving and reviewed; sending: stored into the index and blob store by the upload worker;
# sent; discarded (by its user); expired (nothing sent before upload.expiry_hours); failed (see error)
UPLOAD_STATES = ("open", "sending", "sent", "discarded", "expired", "failed")
# what a file turned out to be; "" while it is still arriving
FILE_KINDS = ("", "instance", "dicomdir", "zip", "skipped")


class Upload(Base):
    """Files a user uploads to send on as one transaction; theirs (and their institution admins') only."""

    __tablename__ = "uploads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    username: Mapped[str] = mapped_column(String(64), default="")
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    staged_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # on disk in the staging folder
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    # what the sender chose (set when sent)
    destination_institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="SET NULL"))
    destination_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    recipient: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    # the exchange transaction opened on send (no foreign key: its table comes in a later migration)
    transaction_id: Mapped[int | None] = mapped_column(Integer)
    instances_stored: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    error: Mapped[str] = mapped_column(Text, default="")
    # the worker storing a sending upload holds it until lease_until (a crashed one's lease runs out)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)


uploads = core_table(Upload)


class UploadFile(Base):
    """One file of an upload: the path the browser gave (text only), where it is staged, what it is."""

    __tablename__ = "upload_files"
    __table_args__ = (UniqueConstraint("upload_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    staged_name: Mapped[str] = mapped_column(String(64), default="")  # its file in the staging folder
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # declared by the browser (or the zip)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    kind: Mapped[str] = mapped_column(String(16), default="")
    reason: Mapped[str] = mapped_column(String(300), default="")  # why skipped
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_uid: Mapped[str] = mapped_column(String(64), default="")
    info: Mapped[str] = mapped_column(Text, default="")  # JSON: what the review shows of an instance
    stored: Mapped[bool] = mapped_column(Boolean, default=False)  # in the index and blob store (while sending)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


upload_files = core_table(UploadFile)
