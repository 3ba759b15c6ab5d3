"""Browser sessions and API tokens. The token is random and only its SHA-256 is stored; a session expires
after a period of inactivity and at an absolute limit; an API token at its own expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imex.db.models import User, WebSession, utcnow

COOKIE = "imex_session"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    session: Session,
    user: User,
    *,
    kind: str,
    ip: str,
    lifetime: dt.timedelta,
    name: str = "",
    second_factor_done: bool = False,
) -> tuple[str, WebSession]:
    """A new session or token; returns the token (shown once) and its row."""
    prefix = "imex_" if kind == "token" else ""
    token = prefix + secrets.token_urlsafe(32)
    now = utcnow()
    row = WebSession(
        token_hash=token_hash(token),
        user_id=user.id,
        kind=kind,
        name=name[:100],
        csrf_token=secrets.token_urlsafe(24),
        second_factor_done=second_factor_done,
        ip=ip[:64],
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
    )
    session.add(row)
    session.flush()
    return token, row


def resolve(session: Session, token: str, *, kind: str, idle: dt.timedelta | None) -> tuple[WebSession, User] | None:
    """The live session or token and its user; None when unknown, revoked, expired, idle too long, or the
    user is disabled. Touches last_seen_at (at most once a minute, to spare the database).

    A sign-in lock-out (`locked_until`, after wrong passwords) does not end them: it throttles password
    attempts, which anyone who knows the user name can make, so it must not let them cut the user's
    working sessions and API tokens off (OWASP ASVS 2.2.1). Disabling the user, resetting them or
    revoking a token does."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token), WebSession.kind == kind))
    now = utcnow()
    if row is None or row.revoked or row.expires_at <= now:
        return None
    if idle is not None and row.last_seen_at + idle <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    if (now - row.last_seen_at).total_seconds() > 60:
        row.last_seen_at = now
    return row, user


def revoke(session: Session, session_id: int) -> None:
    session.execute(update(WebSession).where(WebSession.id == session_id).values(revoked=True))


def revoke_all(session: Session, user_id: int, kind: str | None = None) -> None:
    """End every session (and, with kind None, every token) of a user: on disable, reset or password change."""
    stmt = update(WebSession).where(WebSession.user_id == user_id)
    if kind is not None:
        stmt = stmt.where(WebSession.kind == kind)
    session.execute(stmt.values(revoked=True))
