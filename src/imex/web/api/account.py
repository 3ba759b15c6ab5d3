"""The caller's own account: who am I, password, second factor, API tokens, notifications, dashboard;
and signing in from a script (a bearer token in exchange for user name, password and code)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import desc, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import accounts, sessions, signin_limit, totp
from imex.auth.permissions import Principal
from imex.db.models import AuditEvent, Notification, Transfer, User, WebSession, Worklist, utcnow
from imex.notify import inbox
from imex.auth import scope
from imex.web.context import Portal
from imex.web.deps import ObjectId, client_ip, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem, Refused
from imex.auth.scope import DestNode
from imex.web.views import audit_row, iso, transfer_row

router = APIRouter(prefix="/api/v1", tags=["account"])

EMAIL_EVENTS = inbox.EVENT_KINDS


@router.get("/me", summary="Who you are, your institution and what you may do")
def me(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    user = s.get(User, p.user_id)
    assert user is not None
    return {"id": user.id, "username": user.username, "full_name": user.full_name, "email": user.email,
            "institution": p.institution_ods, "roles": accounts.role_names(s, user.id),
            "permissions": sorted(p.permissions), "second_factor": user.totp_enabled,
            "email_events": user.email_events.split(),
            "notify_worklists": [int(w) for w in user.notify_worklists.split() if w.isdigit()]}


class PasswordChange(BaseModel):
    current_password: str = Field(..., max_length=256)
    new_password: str = Field(..., max_length=256)


def change_password(s: Session, pt: Portal, user: User, body: PasswordChange, ip: str, keep_session: int | None) -> None:
    from imex.auth.passwords import verify_password

    who = {"user_id": user.id, "username": user.username, "institution_id": user.institution_id, "ip": ip}
    if not verify_password(user.password_hash, body.current_password):
        audit.record(s, "user.password", outcome="failure", detail="current password wrong", **who)
        raise Refused(403, "The current password is wrong.")
    try:
        accounts.set_password(s, user, body.new_password, pt.policy)
    except accounts.AccountError as exc:
        raise Problem(422, str(exc)) from None
    s.execute(update(WebSession).where(WebSession.user_id == user.id, WebSession.id != (keep_session or -1))
              .values(revoked=True))
    audit.record(s, "user.password", object_type="user", object_id=user.username, **who)


@router.post("/me/password", summary="Change your password (ends your other sessions)")
def post_password(body: PasswordChange, request: Request, p: Principal = Depends(signed_in),
                  pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, str]:
    user = s.get(User, p.user_id)
    assert user is not None
    change_password(s, pt, user, body, client_ip(request), p.session_id)
    s.commit()
    return {"result": "password changed"}


class Preferences(BaseModel):
    email_events: list[str] = Field(default_factory=list, max_length=10)
    worklists: list[int] | None = Field(None, max_length=50, description="Only notify me of arrivals on these "
                                        "worklists (empty list: all arrivals; omitted: unchanged)")


@router.put("/me/preferences", summary="Which events reach you by e-mail")
def put_preferences(body: Preferences, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    unknown = [e for e in body.email_events if e not in EMAIL_EVENTS]
    if unknown:
        raise Problem(422, f"unknown event(s) {', '.join(unknown)[:200]}; choose from {', '.join(EMAIL_EVENTS)}")
    user = s.get(User, p.user_id)
    assert user is not None
    user.email_events = " ".join(dict.fromkeys(body.email_events))
    if body.worklists is not None:
        for worklist_id in body.worklists:
            visible_or_deny(s, p, s.scalar(scope.worklists_query(p).where(Worklist.id == worklist_id)),
                            "worklist", worklist_id)
        user.notify_worklists = " ".join(str(w) for w in dict.fromkeys(body.worklists))
    s.commit()
    return {"email_events": user.email_events.split(),
            "notify_worklists": [int(w) for w in user.notify_worklists.split()]}


@router.post("/me/second-factor", summary="Start enrolling a second factor: returns the QR code to scan")
def start_second_factor(p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                        s: Session = Depends(db_session)) -> dict[str, str]:
    user = s.get(User, p.user_id)
    assert user is not None
    if user.totp_enabled:
        raise Problem(409, "you already have a second factor; ask an admin to reset it if you lost it")
    secret = accounts.start_enrolment(user, pt.box)
    uri = totp.provisioning_uri(secret, user.username)
    s.commit()
    return {"secret": secret, "uri": uri, "qr_svg": totp.qr_svg(uri)}


class Code(BaseModel):
    code: str = Field(..., min_length=6, max_length=10)


@router.post("/me/second-factor/confirm", summary="Confirm the second factor with a code from the app")
def confirm_second_factor(body: Code, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                          s: Session = Depends(db_session)) -> dict[str, bool]:
    user = s.get(User, p.user_id)
    assert user is not None
    if not accounts.confirm_enrolment(user, body.code, pt.box):
        raise Problem(422, "that code is not right; check the time on your phone and enter the current code")
    audit.record(s, "user.second_factor", object_type="user", object_id=user.username, **p.audit_fields())
    s.commit()
    return {"second_factor": True}


# -- API tokens ----------------------------------------------------------------------------------------

class TokenRequest(BaseModel):
    username: str = Field(..., max_length=64)
    password: str = Field(..., max_length=256)
    code: str = Field("", max_length=10, description="The second-factor code, when the account has one")
    name: str = Field("script", max_length=100)
    days: int | None = Field(None, ge=1, le=365)


@router.post("/auth/token", status_code=201, summary="Sign in from a script: a bearer token")
def post_token(body: TokenRequest, request: Request, pt: Portal = Depends(portal),
               s: Session = Depends(db_session)) -> dict[str, Any]:
    ip = client_ip(request)
    if refusal := signin_limit.for_portal(pt).refusal(ip):
        raise Refused(429, refusal)
    try:
        user = accounts.authenticate(s, body.username, body.password, ip, pt.policy)
    except accounts.LoginFailed as exc:
        signin_limit.for_portal(pt).failed(ip)
        raise Refused(401, exc.public) from None
    if accounts.second_factor_required(s, user):
        if not user.totp_enabled:
            raise Refused(403, "your institution requires a second factor: enrol in the portal first")
        if not accounts.verify_second_factor(s, user, body.code, pt.box, ip):
            raise Refused(401, "the second-factor code is wrong or was already used")
    lifetime = dt.timedelta(days=body.days or pt.config["http.token_days"])
    token, row = sessions.create(s, user, kind="token", ip=ip, lifetime=lifetime, name=body.name,
                                 second_factor_done=True)
    audit.record(s, "auth.token", user_id=user.id, username=user.username, institution_id=user.institution_id,
                 ip=ip, object_type="token", object_id=row.id, detail=body.name)
    s.commit()
    return {"token": token, "id": row.id, "expires_at": iso(row.expires_at)}


@router.get("/auth/tokens", summary="Your API tokens")
def get_tokens(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    rows = s.scalars(select(WebSession).where(WebSession.user_id == p.user_id, WebSession.kind == "token",
                                              WebSession.revoked.is_(False)).order_by(desc(WebSession.id)))
    return [{"id": r.id, "name": r.name, "created_at": iso(r.created_at), "expires_at": iso(r.expires_at),
             "last_used_at": iso(r.last_seen_at)} for r in rows]


@router.delete("/auth/tokens/{token_id}", summary="Revoke one of your API tokens")
def delete_token(token_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, int]:
    row = s.scalar(select(WebSession).where(WebSession.id == token_id, WebSession.user_id == p.user_id,
                                            WebSession.kind == "token"))
    if row is None:
        raise Problem(404, f"you have no token {token_id}")
    row.revoked = True
    audit.record(s, "auth.token_revoke", object_type="token", object_id=token_id, **p.audit_fields())
    s.commit()
    return {"revoked": token_id}


# -- notifications and dashboard ---------------------------------------------------------------------

def unread_count(s: Session | Connection, user_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None))) or 0


@router.get("/notifications", summary="Your in-app notifications, newest first")
def get_notifications(unread: bool = False, p: Principal = Depends(signed_in),
                      s: Session = Depends(db_session)) -> dict[str, Any]:
    stmt = select(Notification).where(Notification.user_id == p.user_id)
    if unread:
        stmt = stmt.where(Notification.read_at.is_(None))
    rows = s.scalars(stmt.order_by(desc(Notification.id)).limit(100)).all()
    return {"unread": unread_count(s, p.user_id), "items": [{"id": n.id, "at": iso(n.at), "kind": n.kind, "title": n.title,
                                        "link": n.link, "read": n.read_at is not None} for n in rows]}


@router.post("/notifications/read", summary="Mark all your notifications read")
def read_notifications(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, int]:
    done = s.execute(update(Notification).where(Notification.user_id == p.user_id, Notification.read_at.is_(None))
                     .values(read_at=utcnow())).rowcount
    s.commit()
    return {"marked": done or 0}


def dashboard(s: Session, p: Principal) -> dict[str, Any]:
    """What arrived for me, what needs action, what happened recently."""
    since = utcnow() - dt.timedelta(days=7)
    arrived: list[dict[str, Any]] = []
    failing: list[dict[str, Any]] = []
    outgoing: list[dict[str, Any]] = []
    if p.can("transfers.view"):
        base = scope.transfers_query(p)
        mine = base.where(DestNode.institution_id == p.institution_id, Transfer.state.in_(("delivered", "confirmed")),
                          Transfer.delivered_at >= since)
        user = s.get(User, p.user_id)
        chosen = [int(w) for w in (user.notify_worklists if user else "").split() if w.isdigit()]
        if chosen:  # "for me": the worklists this user follows
            worklists = s.scalars(scope.worklists_query(p).where(Worklist.id.in_(chosen))).all()
            mine = mine.where(or_(*(scope.worklist_clause(w) for w in worklists))) if worklists else mine
        arrived = [transfer_row(p, *r) for r in s.execute(mine.order_by(desc(Transfer.delivered_at)).limit(10))]
        failing = [transfer_row(p, *r) for r in s.execute(
            base.where(Transfer.state.in_(("failed", "held"))).order_by(desc(Transfer.updated_at)).limit(10))]
        outgoing = [transfer_row(p, *r) for r in s.execute(
            base.where(scope.Study.institution_id == p.institution_id, Transfer.updated_at >= since)
            .order_by(desc(Transfer.updated_at)).limit(10))]
    for_you: list[dict[str, Any]] = []
    if p.can("transfers.view"):  # transfers naming this user as their recipient come first, most urgent first
        for_you = [transfer_row(p, *r) for r in s.execute(
            scope.transfers_query(p).where(Transfer.recipient_user_id == p.user_id,
                                           Transfer.updated_at >= since)
            .order_by(desc(Transfer.priority), desc(Transfer.updated_at)).limit(10))]
    activity = [audit_row(e) for e in s.scalars(select(AuditEvent).where(AuditEvent.user_id == p.user_id)
                                                .order_by(desc(AuditEvent.id)).limit(10))]
    unread = unread_count(s, p.user_id)
    from imex.web.api.requests import needs_action as requests_needing_action  # image requests asked of us

    return {"for_you": for_you, "arrived": arrived, "needs_action": failing, "outgoing": outgoing, "recent_activity": activity,
            "unread_notifications": unread, "requests_needing_action": requests_needing_action(s, p)}


@router.get("/dashboard", summary="Your dashboard: arrivals, failures needing action, recent activity")
def get_dashboard(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    return dashboard(s, p)
