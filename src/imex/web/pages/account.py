"""The account pages: signing in and out (classic forms, protected by a double-submit token and the
same-origin check: password, second factor, enrolment, forced password change), the dashboard, the
account page and notifications. Mirrors web/api/account.py."""

from __future__ import annotations

import datetime as dt
import secrets

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import accounts, certificates, scope, sessions, signin_limit, totp
from imex.auth.password_change import WrongPassword, change_password
from imex.auth.permissions import Principal
from imex.db.models import User
from imex.tls import client_certs
from imex.web import client_cert
from imex.web.context import Portal
from imex.web.deps import check_csrf, check_same_origin, client_ip, db_session, partly_signed_in, portal, signed_in
from imex.web.errors import status_of
from imex.web.pages.render import render
from imex.web.pages.sso_signout import sign_out_elsewhere
from imex.web.views import account as account_views
from imex.web.views import worklist_row

router = APIRouter(include_in_schema=False)
LOGIN_CSRF = "imex_login_csrf"


def _set_session_cookie(request: Request, response: Response, token: str, max_age: dt.timedelta) -> None:
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=int(max_age.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL or //host (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:500]


# -- signing in and out --------------------------------------------------------------------------------


def _login_page(request: Request, status: int = 200, error: str = "", next_url: str = "/") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    providers = list(request.app.state.portal.sso.values())  # a "Sign in with ..." link for each
    response = render(
        request,
        "login.html",
        status=status,
        error=error,
        login_csrf=token,
        next_url=next_url,
        providers=providers,
        certificate_signin=client_certs.requested(request.app.state.portal.config),  # the smart-card link
    )
    response.set_cookie(
        LOGIN_CSRF,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
        max_age=3600,
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str = Query("/", max_length=500)) -> HTMLResponse:
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    username: str = Form(..., max_length=64),
    password: str = Form(..., max_length=256),
    csrf_token: str = Form("", max_length=100),
    next: str = Form("/", max_length=500),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    check_same_origin(request)
    cookie = request.cookies.get(LOGIN_CSRF, "")
    if not cookie or not secrets.compare_digest(cookie, csrf_token):
        return _login_page(request, 403, "The sign-in form had expired; please try again.", _safe_next(next))
    ip = client_ip(request)
    if refusal := signin_limit.for_portal(pt).refusal(ip):
        return _login_page(request, 429, refusal, _safe_next(next))
    try:
        user = accounts.authenticate(s, username, password, ip, pt.policy)
    except accounts.LoginFailed as exc:
        s.commit()  # keep the failure count and its audit event
        signin_limit.for_portal(pt).failed(ip)
        return _login_page(request, 401, exc.public, _safe_next(next))
    try:  # an institution that requires a certificate: this connection must present the user's own
        certificates.check_password_sign_in(s, user, client_cert.presented(request), ip, client_cert.trust(pt.config))
    except certificates.CertificateRequired as exc:
        s.commit()  # keep its audit event
        signin_limit.for_portal(pt).failed(ip)
        return _login_page(request, 403, exc.public, _safe_next(next))
    needs_second = accounts.second_factor_required(s, user)
    token, row = sessions.create(
        s, user, kind="browser", ip=ip, lifetime=pt.session_max, second_factor_done=not needs_second
    )
    if needs_second:
        target = "/login/second-factor" if user.totp_enabled else "/login/enrol"
        audit.record(
            s,
            "auth.password_ok",
            user_id=user.id,
            username=user.username,
            institution_id=user.institution_id,
            ip=ip,
            detail="second factor next",
        )
    else:
        target = "/login/password" if user.must_change_password else _safe_next(next)
        _signed_in(s, user, ip)
    s.commit()
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(request, response, token, pt.session_max)
    response.delete_cookie(LOGIN_CSRF, path="/login")
    return response


def _signed_in(s: Session, user: User, ip: str) -> None:
    accounts.record_sign_in(s, user, ip)


@router.get("/login/second-factor")
def second_factor_form(request: Request, partial=Depends(partly_signed_in)) -> HTMLResponse:
    request.state.csrf = partial[0].csrf_token
    return render(request, "second_factor.html")


@router.post("/login/second-factor")
def second_factor(
    request: Request,
    code: str = Form(..., max_length=10),
    csrf_token: str = Form("", max_length=100),
    partial=Depends(partly_signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    row, user = partial
    check_csrf(request, row.csrf_token, csrf_token)
    ip = client_ip(request)
    if not accounts.verify_second_factor(s, user, code, pt.box, ip):
        if user.failed_logins >= pt.policy.max_failures:
            user.locked_until = accounts.utcnow() + pt.policy.lockout
            user.failed_logins = 0
            sessions.revoke(s, row.id)
            audit.record(
                s,
                "auth.locked",
                outcome="denied",
                user_id=user.id,
                username=user.username,
                institution_id=user.institution_id,
                ip=ip,
                detail="too many wrong second-factor codes",
            )
            s.commit()
            return _login_page(request, 401, "Too many wrong codes: this account is locked for a while.")
        s.commit()
        request.state.csrf = row.csrf_token
        return render(
            request,
            "second_factor.html",
            status=401,
            error="That code is not right. Enter the current code from your authenticator app.",
        )
    row.second_factor_done = True
    _signed_in(s, user, ip)
    s.commit()
    return RedirectResponse("/login/password" if user.must_change_password else "/", status_code=303)


@router.get("/login/enrol")
def enrol_form(
    request: Request, partial=Depends(partly_signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> HTMLResponse:
    row, user = partial
    if user.totp_enabled:
        return RedirectResponse("/login/second-factor", status_code=303)  # type: ignore[return-value]
    secret = accounts.start_enrolment(user, pt.box)
    s.commit()
    uri = totp.provisioning_uri(secret, user.username)
    request.state.csrf = row.csrf_token
    return render(request, "enrol.html", secret=secret, qr_svg=totp.qr_svg(uri))


@router.post("/login/enrol")
def enrol(
    request: Request,
    code: str = Form(..., max_length=10),
    csrf_token: str = Form("", max_length=100),
    partial=Depends(partly_signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    row, user = partial
    check_csrf(request, row.csrf_token, csrf_token)
    if not accounts.confirm_enrolment(user, code, pt.box):
        request.state.csrf = row.csrf_token
        secret = pt.box.open(user.totp_secret) if user.totp_secret else accounts.start_enrolment(user, pt.box)
        s.commit()
        return render(
            request,
            "enrol.html",
            status=422,
            secret=secret,
            qr_svg=totp.qr_svg(totp.provisioning_uri(secret, user.username)),
            error="That code is not right. Scan the code again and enter the current one.",
        )
    row.second_factor_done = True
    audit.record(
        s,
        "user.second_factor",
        user_id=user.id,
        username=user.username,
        institution_id=user.institution_id,
        ip=client_ip(request),
    )
    _signed_in(s, user, client_ip(request))
    s.commit()
    return RedirectResponse("/login/password" if user.must_change_password else "/", status_code=303)


@router.get("/login/password")
def password_form(request: Request, partial=Depends(partly_signed_in)) -> HTMLResponse:
    request.state.csrf = partial[0].csrf_token
    return render(request, "password.html")


@router.post("/login/password")
def password_change(
    request: Request,
    current_password: str = Form(..., max_length=256),
    new_password: str = Form(..., max_length=256),
    csrf_token: str = Form("", max_length=100),
    partial=Depends(partly_signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    row, user = partial
    check_csrf(request, row.csrf_token, csrf_token)
    if not row.second_factor_done and accounts.second_factor_required(s, user):
        return RedirectResponse("/login/second-factor", status_code=303)
    try:
        change_password(s, user, current_password, new_password, pt.policy, ip=client_ip(request), keep_session=row.id)
    except (WrongPassword, accounts.AccountError) as exc:  # its audit event is kept; the form says why
        s.commit()
        request.state.csrf = row.csrf_token
        return render(request, "password.html", status=status_of(exc), error=str(exc))
    s.commit()
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(
    request: Request,
    csrf_token: str = Form("", max_length=100),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    cookie = request.cookies.get(sessions.COOKIE, "")
    found = sessions.resolve(s, cookie, kind="browser", idle=None) if cookie else None
    response: Response = RedirectResponse("/login", status_code=303)
    if found is not None:
        row, user = found
        check_csrf(request, row.csrf_token, csrf_token)
        sessions.revoke(s, row.id)
        audit.record(
            s,
            "auth.logout",
            user_id=user.id,
            username=user.username,
            institution_id=user.institution_id,
            ip=client_ip(request),
        )
        s.commit()
        # signed in through an identity provider that ends its own session too: on to its sign-out
        response = sign_out_elsewhere(request, pt, row) or response
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


# -- pages for signed-in people ------------------------------------------------------------------------


@router.get("/")
def dashboard_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    return render(request, "dashboard.html", board=account_views.dashboard(s, p))


@router.get("/account")
def account_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(
        request,
        "account.html",
        account=account_views.me(s, p),
        tokens=account_views.tokens(s, p),
        email_events=account_views.EMAIL_EVENTS,
        worklists=[worklist_row(w) for w in s.scalars(scope.worklists_query(p))],
    )


@router.get("/notifications")
def notifications_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    return render(request, "notifications.html", notes=account_views.notifications(s, p, unread=False))
