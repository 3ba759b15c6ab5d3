"""Reads of the caller's own account that the JSON API (web/api/account.py) and the pages
(web/pages/account.py) both show: who am I, my tokens, my notifications, my dashboard."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, desc, or_, select
from sqlalchemy.orm import Session

from imex.auth import accounts, scope
from imex.auth.permissions import Principal
from imex.auth.scope import DestNode
from imex.db.models import AuditEvent, Notification, Transfer, User, WebSession, Worklist, utcnow
from imex.notify import inbox
from imex.routing import health
from imex.web.views import audit_row, iso, transfer_row, unread_count
from imex.web.views.requests import needs_action

EMAIL_EVENTS = inbox.EVENT_KINDS


def me(s: Session, p: Principal) -> dict[str, Any]:
    """Who the caller is, their institution and what they may do."""
    user = s.get(User, p.user_id)
    assert user is not None
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "institution": p.institution_ods,
        "roles": accounts.role_names(s, user.id),
        "permissions": sorted(p.permissions),
        "second_factor": user.totp_enabled,
        # an account an identity provider or directory manages, with no imex password of its own
        "managed_by": user.identity_provider,
        "has_password": bool(user.password_hash),
        "email_events": user.email_events.split(),
        "notify_worklists": [int(w) for w in user.notify_worklists.split() if w.isdigit()],
    }


def tokens(s: Session, p: Principal) -> list[dict[str, Any]]:
    """The caller's API tokens that are not revoked, newest first."""
    rows = s.scalars(
        select(WebSession)
        .where(WebSession.user_id == p.user_id, WebSession.kind == "token", WebSession.revoked.is_(False))
        .order_by(desc(WebSession.id))
    )
    return [
        {
            "id": r.id,
            "name": r.name,
            "created_at": iso(r.created_at),
            "expires_at": iso(r.expires_at),
            "last_used_at": iso(r.last_seen_at),
        }
        for r in rows
    ]


def notifications(s: Session, p: Principal, unread: bool = False) -> dict[str, Any]:
    """The caller's in-app notifications, newest first (only the unread ones when asked)."""
    stmt = select(Notification).where(Notification.user_id == p.user_id)
    if unread:
        stmt = stmt.where(Notification.read_at.is_(None))
    rows = s.scalars(stmt.order_by(desc(Notification.id)).limit(100)).all()
    return {
        "unread": unread_count(s, p.user_id),
        "items": [
            {
                "id": n.id,
                "at": iso(n.at),
                "kind": n.kind,
                "title": n.title,
                "link": n.link,
                "read": n.read_at is not None,
            }
            for n in rows
        ],
    }


def dashboard(s: Session, p: Principal) -> dict[str, Any]:
    """What arrived for me, what needs action, what happened recently."""
    since = utcnow() - dt.timedelta(days=7)
    arrived: list[dict[str, Any]] = []
    failing: list[dict[str, Any]] = []
    outgoing: list[dict[str, Any]] = []
    if p.can("transfers.view"):
        base = scope.transfers_query(p)
        mine = base.where(
            DestNode.institution_id == p.institution_id,
            Transfer.state.in_(("delivered", "confirmed")),
            Transfer.delivered_at >= since,
        )
        user = s.get(User, p.user_id)
        chosen = [int(w) for w in (user.notify_worklists if user else "").split() if w.isdigit()]
        if chosen:  # "for me": the worklists this user follows
            worklists = s.scalars(scope.worklists_query(p).where(Worklist.id.in_(chosen))).all()
            mine = mine.where(or_(*(scope.worklist_clause(w) for w in worklists))) if worklists else mine
        arrived = [transfer_row(p, *r) for r in s.execute(mine.order_by(desc(Transfer.delivered_at)).limit(10))]
        failing = [
            transfer_row(p, *r)
            for r in s.execute(
                base.where(
                    or_(
                        Transfer.state.in_(("failed", "held")),
                        and_(
                            Transfer.state.in_(("pending", "sending")),
                            Transfer.attempts > 0,
                            Transfer.last_error.is_not(None),
                        ),
                    )
                )
                .order_by(desc(Transfer.updated_at))
                .limit(10)
            )
        ]
        outgoing = [
            transfer_row(p, *r)
            for r in s.execute(
                base.where(scope.Study.institution_id == p.institution_id, Transfer.updated_at >= since)
                .order_by(desc(Transfer.updated_at))
                .limit(10)
            )
        ]
    for_you: list[dict[str, Any]] = []
    if p.can("transfers.view"):  # transfers naming this user as their recipient come first, most urgent first
        for_you = [
            transfer_row(p, *r)
            for r in s.execute(
                scope.transfers_query(p)
                .where(Transfer.recipient_user_id == p.user_id, Transfer.updated_at >= since)
                .order_by(desc(Transfer.priority), desc(Transfer.updated_at))
                .limit(10)
            )
        ]
    activity = [
        audit_row(e)
        for e in s.scalars(
            select(AuditEvent).where(AuditEvent.user_id == p.user_id).order_by(desc(AuditEvent.id)).limit(10)
        )
    ]
    unread = unread_count(s, p.user_id)
    return {
        "for_you": for_you,
        "arrived": arrived,
        "needs_action": failing,
        # destinations of p's institution that keep failing (web/views/destinations.py has the whole table)
        "failing_destinations": [
            {"node": h.node, "since": iso(h.failing_since), "last_error": h.last_error, "waiting": h.waiting}
            for h in (
                health.destinations(s.connection(), None if p.is_system_admin else p.institution_id)
                if p.can("transfers.view")
                else []
            )
            if h.status == "failing"
        ],
        "outgoing": outgoing,
        "recent_activity": activity,
        "unread_notifications": unread,
        "requests_needing_action": needs_action(s, p),
    }
