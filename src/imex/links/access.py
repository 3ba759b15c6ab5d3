"""What an outside recipient does with a link: open it, ask for a one-time code (sent to the link's
address through the e-mail outbox, with no patient identifiers), enter it (limited attempts, then the link
locks), and hold a short link session scoped to the link's one study. Every step is audited with the link
and the e-mail address, in the audit trail of the institution that made the link."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from imex import audit
from imex.config import Config
from imex.db.models import LinkCode, LinkSession, Study, StudyLink, utcnow
from imex.links import tokens
from imex.links.manage import state
from imex.notify.email import queue_email


class TooManyCodes(Exception):
    """More codes were asked for this link within the hour than links.codes_per_hour."""


def record(
    s: Session, action: str, link: StudyLink, *, outcome: str = "success", ip: str = "", detail: str = ""
) -> None:
    """Audit one use of a link, with the link, its study and its e-mail address."""
    study_uid = s.scalar(select(Study.study_uid).where(Study.id == link.study_id)) or ""
    audit.record(
        s,
        action,
        outcome=outcome,
        username=f"link:{link.email}"[:64],
        institution_id=link.institution_id,
        ip=ip,
        study_uid=study_uid,
        object_type="link",
        object_id=link.id,
        detail=f"{link.email}: {detail}" if detail else link.email,
    )


def find(s: Session, token: str) -> StudyLink | None:
    if not tokens.looks_like_token(token):
        return None
    return s.scalar(select(StudyLink).where(StudyLink.token_hash == tokens.digest(token)))


def send_code(s: Session, link: StudyLink, config: Config, *, ip: str = "") -> None:
    """A new one-time code for `link`, queued to its address; refused past links.codes_per_hour."""
    now = utcnow()
    recent = (
        s.scalar(
            select(func.count())
            .select_from(LinkCode)
            .where(LinkCode.link_id == link.id, LinkCode.created_at > now - dt.timedelta(hours=1))
        )
        or 0
    )
    if recent >= int(config["links.codes_per_hour"]):
        record(s, "link.code_refused", link, outcome="denied", ip=ip, detail="too many codes asked for within an hour")
        raise TooManyCodes()
    code = tokens.new_code()
    minutes = int(config["links.code_minutes"])
    s.add(
        LinkCode(
            link_id=link.id,
            code_hash=tokens.code_digest(link.id, code),
            created_at=now,
            expires_at=now + dt.timedelta(minutes=minutes),
        )
    )
    queue_email(
        s.connection(),
        [link.email],
        "[imex] Your code to open shared images",
        f"Your one-time code is {code}\n\nEnter it on the page where you asked for it. It works once, "
        f"within {minutes} minutes.\n\nIf you did not ask for a code, you can ignore this message; "
        "nobody can open the images without it.\n",
    )
    record(s, "link.code_sent", link, ip=ip, detail="one-time code sent")


def check_code(s: Session, link: StudyLink, code: str, config: Config, *, ip: str = "") -> bool:
    """Whether `code` is a valid, unused, unexpired code of `link`; a wrong one counts towards locking it."""
    now = utcnow()
    code = code.strip()
    wanted = tokens.code_digest(link.id, code) if code.isdigit() and len(code) == tokens.CODE_DIGITS else ""
    for row in s.scalars(
        select(LinkCode).where(LinkCode.link_id == link.id, LinkCode.used_at.is_(None), LinkCode.expires_at > now)
    ):
        if wanted and tokens.same(row.code_hash, wanted):
            row.used_at = now
            link.failed_codes = 0
            link.uses += 1
            link.last_used_at = now
            record(s, "link.code_ok", link, ip=ip, detail="code accepted, link session opened")
            return True
    link.failed_codes += 1
    limit = int(config["links.max_wrong_codes"])
    locked = link.failed_codes >= limit
    if locked:
        link.locked_at = now
        s.execute(delete(LinkSession).where(LinkSession.link_id == link.id))
    record(
        s,
        "link.code_wrong",
        link,
        outcome="failure",
        ip=ip,
        detail=f"wrong or expired code ({link.failed_codes} of {limit})" + ("; link locked" if locked else ""),
    )
    return False


def open_session(s: Session, link: StudyLink, *, ip: str = "") -> str:
    """A new link session; returns the cookie's token (only its hash is stored)."""
    token = tokens.new_token()
    now = utcnow()
    s.add(LinkSession(link_id=link.id, token_hash=tokens.digest(token), ip=ip[:64], created_at=now, last_seen_at=now))
    return token


def resolve(s: Session, cookie: str, idle: dt.timedelta) -> tuple[LinkSession, StudyLink] | None:
    """The session and its link, while the link is active and the session has not been idle too long."""
    if not cookie or not tokens.looks_like_token(cookie):
        return None
    found = s.execute(
        select(LinkSession, StudyLink)
        .join(StudyLink, StudyLink.id == LinkSession.link_id)
        .where(LinkSession.token_hash == tokens.digest(cookie))
    ).first()
    if found is None:
        return None
    row, link = found
    now = utcnow()
    if state(link, now) != "active" or row.last_seen_at + idle < now:
        return None
    if now - row.last_seen_at > dt.timedelta(seconds=30):  # not a write for every frame the viewer reads
        row.last_seen_at = now
    return row, link
