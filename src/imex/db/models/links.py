"""Links to one study for a recipient outside the network (a patient, a solicitor, a clinician elsewhere):
the link (only its token's hash is kept), the one-time codes sent to its e-mail address, and the short
sessions a correct code opens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow

LINK_MODES = ("view", "download")  # view only, or view and download


class StudyLink(Base):
    """A link to one study for one named e-mail address, until it expires or is revoked; it locks after
    too many wrong codes."""

    __tablename__ = "study_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    # the creator's institution: its users see the link on the study page and its audit trail the uses
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    email: Mapped[str] = mapped_column(String(320))
    mode: Mapped[str] = mapped_column(String(16), default="view")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex of the URL's token
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    locked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    failed_codes: Mapped[int] = mapped_column(Integer, default=0)  # wrong codes since the last right one
    uses: Mapped[int] = mapped_column(Integer, default=0)  # sessions opened with a correct code
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


study_links = core_table(StudyLink)


class LinkCode(Base):
    """A one-time code sent to the link's address: single use, expires in minutes (only its hash kept)."""

    __tablename__ = "link_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("study_links.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


link_codes = core_table(LinkCode)


class LinkSession(Base):
    """A recipient's session on one link (its own cookie; only the token's hash kept), with a short idle
    expiry; it ends with its link."""

    __tablename__ = "link_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("study_links.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


link_sessions = core_table(LinkSession)
