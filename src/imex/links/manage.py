"""Creating, listing and revoking links, and the state a link is in. The URL's token is returned once,
at creation; only its hash is kept."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.config import Config
from imex.db.models import LINK_MODES, LinkSession, Patient, Study, StudyLink, utcnow
from imex.errors import Invalid
from imex.links import tokens

EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")


class LinkError(Invalid, ValueError):
    """What was wrong with a link request, in words for the person who made it."""


def state(link: StudyLink, now: dt.datetime | None = None) -> str:
    """revoked | locked | expired | active (in that order: the strongest reason wins)."""
    now = now or utcnow()
    if link.revoked_at is not None:
        return "revoked"
    if link.locked_at is not None:
        return "locked"
    if link.expires_at <= now:
        return "expired"
    return "active"


@dataclass(frozen=True)
class NewLink:
    link: StudyLink
    token: str


def create(
    s: Session, p: Principal, study: Study, patient: Patient, config: Config, *, email: str, mode: str, days: int | None
) -> NewLink:
    """A link to `study` (which `p` may see) for `email`; audited. Download mode needs studies.download."""
    email = email.strip()
    if len(email) > 320 or not EMAIL.match(email):
        raise LinkError("give one e-mail address, like name@example.org")
    if mode not in LINK_MODES:
        raise LinkError(f"mode is one of {', '.join(LINK_MODES)}")
    if mode == "download" and not p.can("studies.download"):
        raise LinkError("a link that allows downloading needs the permission 'studies.download'; make a view-only link")
    longest = int(config["links.max_expiry_days"])
    days = int(config["links.expiry_days"]) if days is None else days
    if not 1 <= days <= longest:
        raise LinkError(f"a link expires after 1 to {longest} days")
    token = tokens.new_token()
    now = utcnow()
    link = StudyLink(
        study_id=study.id,
        institution_id=p.institution_id,
        created_by_user_id=p.user_id,
        created_by=p.username,
        email=email,
        mode=mode,
        token_hash=tokens.digest(token),
        created_at=now,
        expires_at=now + dt.timedelta(days=days),
        failed_codes=0,
        uses=0,
    )
    s.add(link)
    s.flush()
    audit.record(
        s,
        "link.create",
        study_uid=study.study_uid,
        patient_id=patient.patient_id,
        object_type="link",
        object_id=link.id,
        detail=f"for {email}, {mode}, until {link.expires_at:%Y-%m-%d %H:%M} UTC",
        **p.audit_fields(),
    )
    return NewLink(link, token)


def revoke(s: Session, p: Principal, link: StudyLink, study: Study) -> None:
    """End the link and every session opened with it; audited. Revoking twice changes nothing."""
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        link.revoked_by = p.username
        for row in s.scalars(select(LinkSession).where(LinkSession.link_id == link.id)):
            s.delete(row)
    audit.record(
        s,
        "link.revoke",
        study_uid=study.study_uid,
        object_type="link",
        object_id=link.id,
        detail=f"for {link.email}",
        **p.audit_fields(),
    )


def summary(link: StudyLink, now: dt.datetime | None = None) -> dict[str, object]:
    """A link as the API and the study page show it (never its token)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value else None

    return {
        "id": link.id,
        "study_id": link.study_id,
        "email": link.email,
        "mode": link.mode,
        "state": state(link, now),
        "created_by": link.created_by,
        "created_at": iso(link.created_at),
        "expires_at": iso(link.expires_at),
        "revoked_at": iso(link.revoked_at),
        "revoked_by": link.revoked_by,
        "locked_at": iso(link.locked_at),
        "failed_codes": link.failed_codes,
        "uses": link.uses,
        "last_used_at": iso(link.last_used_at),
    }


def count_active(s: Session, study_id: int) -> int:
    return (
        s.scalar(
            select(func.count())
            .select_from(StudyLink)
            .where(
                StudyLink.study_id == study_id,
                StudyLink.revoked_at.is_(None),
                StudyLink.locked_at.is_(None),
                StudyLink.expires_at > utcnow(),
            )
        )
        or 0
    )
