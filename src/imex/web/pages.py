"""The portal's pages: server-rendered (Jinja2, autoescaped) from the same functions as the JSON API.
Page actions are API calls made by static/imex.js with the session's CSRF token; only signing in and out
are classic forms (protected by a double-submit token and the same-origin check)."""
from __future__ import annotations

import datetime as dt
import secrets
from urllib.parse import urlencode
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from imex import __version__, audit
from imex.auth import accounts, sessions, signin_limit, totp
from imex.auth.permissions import PERMISSIONS, Principal
from imex.db.models import User
from imex.auth import scope
from imex.web.api import account as account_api
from imex.web.api import admin as admin_api
from imex.web.api import transfers as transfers_api
from imex.web.context import Portal
from imex.web.deps import ObjectId, check_csrf, check_same_origin, client_ip, db_session, partly_signed_in, portal, signed_in
from imex.web.errors import Problem
from imex.web import views
from imex.web.views import worklist_row

router = APIRouter(include_in_schema=False)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
LOGIN_CSRF = "imex_login_csrf"


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    pt: Portal = request.app.state.portal
    unread = 0
    if principal is not None:
        with pt.db.reader() as conn:  # the route's own session may hold SQLite's write lock
            unread = account_api.unread_count(conn, principal.user_id)
    base = {"request": request, "me": principal, "csrf": getattr(request.state, "csrf", ""), "version": __version__,
            "refresh": pt.config["http.worklist_refresh_seconds"], "unread": unread,
            # studies expiring before this (ISO, compared as text with the rows' expires_at) are flagged
            "warn_hours": pt.config["retention.warn_hours"],
            "warn_before": views.iso(accounts.utcnow() + dt.timedelta(hours=pt.config["retention.warn_hours"]))}
    return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)


def render_error(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", status=status, title=title, detail=detail)


def _set_session_cookie(request: Request, response: Response, token: str, max_age: dt.timedelta) -> None:
    response.set_cookie(sessions.COOKIE, token, max_age=int(max_age.total_seconds()), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL or //host (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:500]


# -- signing in and out --------------------------------------------------------------------------------

def _login_page(request: Request, status: int = 200, error: str = "", next_url: str = "/") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status=status, error=error, login_csrf=token, next_url=next_url)
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/login", max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, next: str = Query("/", max_length=500)) -> HTMLResponse:
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login")
def login(request: Request, username: str = Form(..., max_length=64), password: str = Form(..., max_length=256),
          csrf_token: str = Form("", max_length=100), next: str = Form("/", max_length=500),
          pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> Response:
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
    needs_second = accounts.second_factor_required(s, user)
    token, row = sessions.create(s, user, kind="browser", ip=ip, lifetime=pt.session_max,
                                 second_factor_done=not needs_second)
    if needs_second:
        target = "/login/second-factor" if user.totp_enabled else "/login/enrol"
        audit.record(s, "auth.password_ok", user_id=user.id, username=user.username,
                     institution_id=user.institution_id, ip=ip, detail="second factor next")
    else:
        target = "/login/password" if user.must_change_password else _safe_next(next)
        _signed_in(s, user, ip)
    s.commit()
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(request, response, token, pt.session_max)
    response.delete_cookie(LOGIN_CSRF, path="/login")
    return response


def _signed_in(s: Session, user: User, ip: str) -> None:
    user.last_login_at = accounts.utcnow()
    audit.record(s, "auth.login", user_id=user.id, username=user.username, institution_id=user.institution_id, ip=ip)


@router.get("/login/second-factor")
def second_factor_form(request: Request, partial=Depends(partly_signed_in)) -> HTMLResponse:  # type: ignore[no-untyped-def]
    request.state.csrf = partial[0].csrf_token
    return render(request, "second_factor.html")


@router.post("/login/second-factor")
def second_factor(request: Request, code: str = Form(..., max_length=10), csrf_token: str = Form("", max_length=100),
                  partial=Depends(partly_signed_in), pt: Portal = Depends(portal),  # type: ignore[no-untyped-def]
                  s: Session = Depends(db_session)) -> Response:
    row, user = partial
    check_csrf(request, row.csrf_token, csrf_token)
    ip = client_ip(request)
    if not accounts.verify_second_factor(s, user, code, pt.box, ip):
        if user.failed_logins >= pt.policy.max_failures:
            user.locked_until = accounts.utcnow() + pt.policy.lockout
            user.failed_logins = 0
            sessions.revoke(s, row.id)
            audit.record(s, "auth.locked", outcome="denied", user_id=user.id, username=user.username,
                         institution_id=user.institution_id, ip=ip, detail="too many wrong second-factor codes")
            s.commit()
            return _login_page(request, 401, "Too many wrong codes: this account is locked for a while.")
        s.commit()
        request.state.csrf = row.csrf_token
        return render(request, "second_factor.html", status=401, error="That code is not right. Enter the "
                                                                       "current code from your authenticator app.")
    row.second_factor_done = True
    _signed_in(s, user, ip)
    s.commit()
    return RedirectResponse("/login/password" if user.must_change_password else "/", status_code=303)


@router.get("/login/enrol")
def enrol_form(request: Request, partial=Depends(partly_signed_in), pt: Portal = Depends(portal),  # type: ignore[no-untyped-def]
               s: Session = Depends(db_session)) -> HTMLResponse:
    row, user = partial
    if user.totp_enabled:
        return RedirectResponse("/login/second-factor", status_code=303)  # type: ignore[return-value]
    secret = accounts.start_enrolment(user, pt.box)
    s.commit()
    uri = totp.provisioning_uri(secret, user.username)
    request.state.csrf = row.csrf_token
    return render(request, "enrol.html", secret=secret, qr_svg=totp.qr_svg(uri))


@router.post("/login/enrol")
def enrol(request: Request, code: str = Form(..., max_length=10), csrf_token: str = Form("", max_length=100),
          partial=Depends(partly_signed_in), pt: Portal = Depends(portal),  # type: ignore[no-untyped-def]
          s: Session = Depends(db_session)) -> Response:
    row, user = partial
    check_csrf(request, row.csrf_token, csrf_token)
    if not accounts.confirm_enrolment(user, code, pt.box):
        request.state.csrf = row.csrf_token
        secret = pt.box.open(user.totp_secret) if user.totp_secret else accounts.start_enrolment(user, pt.box)
        s.commit()
        return render(request, "enrol.html", status=422, secret=secret,
                      qr_svg=totp.qr_svg(totp.provisioning_uri(secret, user.username)),
                      error="That code is not right. Scan the code again and enter the current one.")
    row.second_factor_done = True
    audit.record(s, "user.second_factor", user_id=user.id, username=user.username,
                 institution_id=user.institution_id, ip=client_ip(request))
    _signed_in(s, user, client_ip(request))
    s.commit()
    return RedirectResponse("/login/password" if user.must_change_password else "/", status_code=303)


@router.get("/login/password")
def password_form(request: Request, partial=Depends(partly_signed_in)) -> HTMLResponse:  # type: ignore[no-untyped-def]
    request.state.csrf = partial[0].csrf_token
    return render(request, "password.html")


@router.post("/login/password")
def password_change(request: Request, current_password: str = Form(..., max_length=256),
                    new_password: str = Form(..., max_length=256), csrf_token: str = Form("", max_length=100),
                    partial=Depends(partly_signed_in), pt: Portal = Depends(portal),  # type: ignore[no-untyped-def]
                    s: Session = Depends(db_session)) -> Response:
    row, user = partial
    check_csrf(request, row.csrf_token, csrf_token)
    if not row.second_factor_done and accounts.second_factor_required(s, user):
        return RedirectResponse("/login/second-factor", status_code=303)
    try:
        account_api.change_password(s, pt, user, account_api.PasswordChange(
            current_password=current_password, new_password=new_password), client_ip(request), row.id)
    except Problem as exc:
        s.commit()
        request.state.csrf = row.csrf_token
        return render(request, "password.html", status=exc.status, error=exc.detail)
    s.commit()
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("", max_length=100), pt: Portal = Depends(portal),
           s: Session = Depends(db_session)) -> Response:
    cookie = request.cookies.get(sessions.COOKIE, "")
    found = sessions.resolve(s, cookie, kind="browser", idle=None) if cookie else None
    if found is not None:
        row, user = found
        check_csrf(request, row.csrf_token, csrf_token)
        sessions.revoke(s, row.id)
        audit.record(s, "auth.logout", user_id=user.id, username=user.username, institution_id=user.institution_id,
                     ip=client_ip(request))
        s.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


# -- pages for signed-in people ------------------------------------------------------------------------

@router.get("/")
def dashboard_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "dashboard.html", board=account_api.dashboard(s, p))


@router.get("/worklist")
def worklist_page(request: Request, direction: str = Query("incoming", max_length=10),
                  state: str = Query("", max_length=10), q: str = Query("", max_length=64),
                  modality: str = Query("", max_length=16), date_from: str = Query("", max_length=8),
                  date_to: str = Query("", max_length=8), worklist: int | None = Query(None, ge=1, le=2**31 - 1),
                  sort: str = Query("received", max_length=12), order: str = Query("desc", max_length=4),
                  offset: int = Query(0, ge=0, le=10**7),
                  p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    p.require("transfers.view")
    direction = direction if direction in ("all", "incoming", "outgoing") else "incoming"
    state = state if state in transfers_api.STATES else ""
    sort = sort if sort in transfers_api.SORTS else "received"
    order = order if order in ("asc", "desc") else "desc"
    page = transfers_api.TransferFilters(direction, state or None, q, modality, date_from, date_to, worklist, sort,
                                         order).page(s, p, limit=50, offset=offset)  # audits a search
    s.commit()
    worklists = [worklist_row(w) for w in s.scalars(scope.worklists_query(p))]
    filters = {"direction": direction, "state": state, "q": q, "modality": modality, "date_from": date_from,
               "date_to": date_to, "worklist": worklist or "", "sort": sort, "order": order}

    def link(**changes: object) -> str:
        return urlencode({k: v for k, v in {**filters, **changes}.items() if v not in ("", None)})

    return render(request, "worklist.html", page=page, filters=filters, worklists=worklists, offset=offset,
                  states=transfers_api.STATES, link=link)


@router.get("/transfers/{transfer_id}")
def transfer_page(transfer_id: ObjectId, request: Request, p: Principal = Depends(signed_in),
                  s: Session = Depends(db_session)) -> HTMLResponse:
    t = transfers_api.get_transfer(transfer_id, p, s)
    recipients = None  # the priority and recipient form: senders (or hub admins) of an unfinished transfer
    if (p.can("studies.send") or p.can("transfers.manage")) and (t["direction"] == "outgoing" or p.is_system_admin) \
            and t["state"] not in ("delivered", "confirmed", "cancelled"):
        from imex.web.api import priority as priority_api

        recipients = priority_api.recipients(transfer_id, p, s)
    return render(request, "transfer.html", t=t, recipients=recipients)


@router.get("/studies/{study_id}")
def study_page(study_id: ObjectId, request: Request, p: Principal = Depends(signed_in),
               s: Session = Depends(db_session)) -> HTMLResponse:
    from imex.web.folder_pages import folders_for_study

    from imex.web.api.links import links_for_study

    return render(request, "study.html", study=transfers_api.get_study(study_id, p, s),
                  folders=folders_for_study(s, p), links=links_for_study(s, p, study_id))


@router.get("/admin/nodes")
def nodes_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "admin_nodes.html", nodes=admin_api.get_nodes(p, s),
                  institutions=admin_api.get_institutions(p, s))


@router.get("/admin/users")
def users_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "admin_users.html", users=admin_api.get_users(p, s), roles=admin_api.get_roles(p, s),
                  institutions=admin_api.get_institutions(p, s))


@router.get("/admin/roles")
def roles_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    p.require("roles.manage")
    return render(request, "admin_roles.html", roles=admin_api.get_roles(p, s), permissions=PERMISSIONS)


@router.get("/admin/quarantine")
def quarantine_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    studies = transfers_api.get_quarantine(500, 0, p, s)
    return render(request, "admin_quarantine.html", studies=studies,
                  directory=admin_api.get_directory(p, s))


@router.get("/admin/rules")
def rules_page(request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> HTMLResponse:
    return render(request, "admin_rules.html", rules=admin_api.get_rules(p, pt))


@router.get("/admin/worklists")
def worklists_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    p.require("nodes.manage")
    return render(request, "admin_worklists.html", worklists=admin_api.get_worklists(p, s))


@router.get("/audit")
def audit_page(request: Request, p: Principal = Depends(signed_in)) -> HTMLResponse:
    p.require("audit.view")
    return render(request, "audit.html")


@router.get("/account")
def account_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "account.html", account=account_api.me(p, s), tokens=account_api.get_tokens(p, s),
                  email_events=account_api.EMAIL_EVENTS,
                  worklists=[worklist_row(w) for w in s.scalars(scope.worklists_query(p))])


@router.get("/notifications")
def notifications_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "notifications.html", notes=account_api.get_notifications(False, p, s))
