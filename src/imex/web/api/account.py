"""The caller's own account: who am I, password, second factor, API tokens, notifications, dashboard;
and signing in from a script (a bearer token in exchange for user name, password and code)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import accounts, certificates, scope, sessions, signin_limit, totp
from imex.auth.password_change import WrongPassword, change_password
from imex.auth.permissions import Principal
from imex.db.models import Notification, User, WebSession, Worklist, utcnow
from imex.web import client_cert
from imex.web.context import Portal
from imex.web.deps import ObjectId, client_ip, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem, Refused, refused
from imex.web.views import iso
from imex.web.views.account import EMAIL_EVENTS, dashboard, notifications, tokens
from imex.web.views.account import me as me_view

router = APIRouter(prefix="/api/v1", tags=["account"])


@router.get("/me", summary="Who you are, your institution and what you may do")
def me(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    return me_view(s, p)


class PasswordChange(BaseModel):
    current_password: str = Field(..., max_length=256)
    new_password: str = Field(..., max_length=256)


@router.post("/me/password", summary="Change your password (ends your other sessions)")
def post_password(
    body: PasswordChange,
    request: Request,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, str]:
    user = s.get(User, p.user_id)
    assert user is not None
    try:
        change_password(
            s,
            user,
            body.current_password,
            body.new_password,
            pt.policy,
            ip=client_ip(request),
            keep_session=p.session_id,
        )
    except WrongPassword as exc:
        raise refused(exc) from None  # the failed attempt stays in the audit trail
    s.commit()
    return {"result": "password changed"}


class Preferences(BaseModel):
    email_events: list[str] = Field(default_factory=list, max_length=10)
    worklists: list[int] | None = Field(
        None,
        max_length=50,
        description="Only notify me of arrivals on these worklists (empty list: all arrivals; omitted: unchanged)",
    )


@router.put("/me/preferences", summary="Which events reach you by e-mail")
def put_preferences(
    body: Preferences, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    unknown = [e for e in body.email_events if e not in EMAIL_EVENTS]
    if unknown:
        raise Problem(422, f"unknown event(s) {', '.join(unknown)[:200]}; choose from {', '.join(EMAIL_EVENTS)}")
    user = s.get(User, p.user_id)
    assert user is not None
    user.email_events = " ".join(dict.fromkeys(body.email_events))
    if body.worklists is not None:
        for worklist_id in body.worklists:
            visible_or_deny(
                s, p, s.scalar(scope.worklists_query(p).where(Worklist.id == worklist_id)), "worklist", worklist_id
            )
        user.notify_worklists = " ".join(str(w) for w in dict.fromkeys(body.worklists))
    s.commit()
    return {
        "email_events": user.email_events.split(),
        "notify_worklists": [int(w) for w in user.notify_worklists.split()],
    }


@router.post("/me/second-factor", summary="Start enrolling a second factor: returns the QR code to scan")
def start_second_factor(
    p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, str]:
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
def confirm_second_factor(
    body: Code, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, bool]:
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
def post_token(
    body: TokenRequest, request: Request, pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    ip = client_ip(request)
    if refusal := signin_limit.for_portal(pt).refusal(ip):
        raise Refused(429, refusal)
    try:
        user = accounts.authenticate(s, body.username, body.password, ip, pt.policy)
    except accounts.LoginFailed as exc:
        signin_limit.for_portal(pt).failed(ip)
        raise Refused(401, exc.public) from None
    try:  # an institution that requires a certificate: this connection must present the user's own
        certificates.check_password_sign_in(s, user, client_cert.presented(request), ip, client_cert.trust(pt.config))
    except certificates.CertificateRequired as exc:
        signin_limit.for_portal(pt).failed(ip)
        raise Refused(403, exc.public) from None
    if accounts.second_factor_required(s, user):
        if not user.totp_enabled:
            raise Refused(403, "your institution requires a second factor: enrol in the portal first")
        if not accounts.verify_second_factor(s, user, body.code, pt.box, ip):
            raise Refused(401, "the second-factor code is wrong or was already used")
    if user.must_change_password:  # a one-time password (new account, reset) buys nothing but its change
        audit.record(
            s,
            "auth.token",
            outcome="denied",
            user_id=user.id,
            username=user.username,
            institution_id=user.institution_id,
            ip=ip,
            object_type="token",
            detail="refused: the password is a one-time password that must be changed first",
        )
        raise Refused(
            403,
            "this account's password is a one-time password: sign in to the portal, choose a "
            "new password, then ask for an API token",
        )
    lifetime = dt.timedelta(days=body.days or pt.config["http.token_days"])
    token, row = sessions.create(
        s, user, kind="token", ip=ip, lifetime=lifetime, name=body.name, second_factor_done=True
    )
    audit.record(
        s,
        "auth.token",
        user_id=user.id,
        username=user.username,
        institution_id=user.institution_id,
        ip=ip,
        object_type="token",
        object_id=row.id,
        detail=body.name,
    )
    s.commit()
    return {"token": token, "id": row.id, "expires_at": iso(row.expires_at)}


class SessionToken(BaseModel):
    name: str = Field("script", max_length=100)
    days: int | None = Field(None, ge=1, le=365)


# a token from a browser session asks for a recent sign-in instead of the password again: accounts of an
# identity provider have no password, and a session left open on a shared workstation should not mint tokens
RECENT_SIGN_IN = dt.timedelta(minutes=15)


@router.post(
    "/me/tokens",
    status_code=201,
    summary="A bearer token for the signed-in user, from a browser session signed in within the last 15 minutes "
    "(by password, identity provider or certificate)",
)
def post_session_token(
    body: SessionToken,
    request: Request,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    current = s.get(WebSession, p.session_id) if p.session_id is not None else None
    if current is None or current.kind != "browser":
        raise Refused(403, "API tokens are made from a signed-in browser session")
    if accounts.utcnow() - current.created_at > RECENT_SIGN_IN:
        raise Refused(403, "sign out and in again (within 15 minutes) to create an API token")
    user = s.get(User, p.user_id)
    assert user is not None
    if user.must_change_password:
        raise Refused(403, "choose a new password first")
    lifetime = dt.timedelta(days=body.days or pt.config["http.token_days"])
    token, row = sessions.create(
        s, user, kind="token", ip=client_ip(request), lifetime=lifetime, name=body.name, second_factor_done=True
    )
    audit.record(
        s,
        "auth.token",
        object_type="token",
        object_id=row.id,
        detail=f"{body.name} (from a browser session)",
        **p.audit_fields(),
    )
    s.commit()
    return {"token": token, "id": row.id, "expires_at": iso(row.expires_at)}


@router.get("/auth/tokens", summary="Your API tokens")
def get_tokens(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return tokens(s, p)


@router.delete("/auth/tokens/{token_id}", summary="Revoke one of your API tokens")
def delete_token(
    token_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, int]:
    row = s.scalar(
        select(WebSession).where(WebSession.id == token_id, WebSession.user_id == p.user_id, WebSession.kind == "token")
    )
    if row is None:
        raise Problem(404, f"you have no token {token_id}")
    row.revoked = True
    audit.record(s, "auth.token_revoke", object_type="token", object_id=token_id, **p.audit_fields())
    s.commit()
    return {"revoked": token_id}


# -- notifications and dashboard ---------------------------------------------------------------------


@router.get("/notifications", summary="Your in-app notifications, newest first")
def get_notifications(
    unread: bool = False, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return notifications(s, p, unread)


@router.post("/notifications/read", summary="Mark all your notifications read")
def read_notifications(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, int]:
    done = cast(
        CursorResult[Any],
        s.execute(
            update(Notification)
            .where(Notification.user_id == p.user_id, Notification.read_at.is_(None))
            .values(read_at=utcnow())
        ),
    ).rowcount
    s.commit()
    return {"marked": done or 0}


@router.get("/dashboard", summary="Your dashboard: arrivals, failures needing action, recent activity")
def get_dashboard(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    return dashboard(s, p)
