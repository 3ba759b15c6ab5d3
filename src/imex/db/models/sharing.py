"""Sharing folders (emergency and elective), who takes part in them and the studies they hold until when."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class Folder(Base):
    """A sharing folder: emergency (every authorised user of its participating institutions) or elective
    (named members only), with its own retention. Studies reach it by its called AE title, from the portal,
    or from a transfer."""

    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # emergency | elective
    alias: Mapped[str | None] = mapped_column(String(16), unique=True)  # called AE title that files into it
    retention_hours: Mapped[int] = mapped_column(Integer)
    # elective folders are managed by the admins of the institution that owns them
    owner_institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="SET NULL"))
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


folders = core_table(Folder)


class FolderInstitution(Base):
    """An institution taking part in a folder."""

    __tablename__ = "folder_institutions"
    __table_args__ = (UniqueConstraint("folder_id", "institution_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)


folder_institutions = core_table(FolderInstitution)


class FolderMember(Base):
    """A user of a participating institution who may see an elective folder (added by their own admins)."""

    __tablename__ = "folder_members"
    __table_args__ = (UniqueConstraint("folder_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


folder_members = core_table(FolderMember)


class FolderStudy(Base):
    """A study in a folder until `expires_at`; the retention pass takes it out then."""

    __tablename__ = "folder_studies"
    __table_args__ = (UniqueConstraint("folder_id", "study_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    added_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


folder_studies = core_table(FolderStudy)
