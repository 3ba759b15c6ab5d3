"""Single sign-on through an `[[oidc]]` provider: the "Sign in with ..." link starts it (GET
/login/sso/{name}: a sign-in under way is stored, the browser goes to the provider) and the provider sends
the browser back (GET /login/sso/{name}/callback). The checks are in the domain (auth/sso_flow.py,
auth/oidc.py, auth/sso.py); here are the cookies and pages.

The callback comes from the provider's site, so the browser sends none of imex's SameSite=Strict cookies
with it, nor with a redirect that follows it: the sign-in is bound to the browser that started it by a
SameSite=Lax cookie holding its state, and a signed-in callback answers a page that moves on by itself
(a navigation from imex's own page, which does carry the new session cookie)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from imex.auth import accounts, sessions, sso, sso_flow
from imex.auth.oidc_config import Provider
from imex.auth.sso import SignInRefused
from imex.web.context import Portal
from imex.web.deps import client_ip, db_session, portal
from imex.web.errors import Problem
from imex.web.pages.account import _safe_next, _set_session_cookie
from imex.web.pages.render import render
from imex.web.pages.sso_signout import LOGOUT_COOKIE, SESSION_PREFIX, hub_address

router = APIRouter(include_in_schema=False)
STATE_COOKIE = "imex_sso_state"  # binds a sign-in under way to the browser that started it
_MAX_HINT = 3500  # a cookie holds about 4 KiB: a longer ID token is not kept (the sign-out sends client_id only)


def _provider(pt: Portal, name: str) -> Provider:
    provider = pt.sso.get(name)
    if provider is None:
        raise Problem(404, "No identity provider of that name is configured here.", title="Unknown sign-in")
    return provider


def _redirect_uri(request: Request, provider: Provider) -> str:
    return provider.redirect_uri or f"{hub_address(request, provider)}/login/sso/{provider.name}/callback"


def _refused(request: Request, provider: Provider, refusal: SignInRefused, status: int = 403) -> HTMLResponse:
    response = render(request, "sso_refused.html", status, provider=provider.title, message=refusal.public)
    response.delete_cookie(STATE_COOKIE, path="/login/sso/")
    return response


@router.get("/login/sso/{name}")
def sso_start(
    request: Request,
    name: str,
    next: str = Query("/", max_length=500),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    provider = _provider(pt, name)
    try:
        started = sso_flow.start(s, provider, _redirect_uri(request, provider), _safe_next(next))
    except SignInRefused as refusal:
        s.rollback()
        sso.record_refusal(s, provider.name, refusal, client_ip(request))
        s.commit()
        return _refused(request, provider, refusal, status=503)
    s.commit()
    response = RedirectResponse(started.url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        started.state,
        max_age=sso_flow.STATE_MINUTES * 60,
        httponly=True,
        samesite="lax",  # sent with the provider's redirect back (a top-level GET from its site)
        secure=request.url.scheme == "https",
        path="/login/sso/",
    )
    return response


@router.get("/login/sso/{name}/callback")
def sso_callback(
    request: Request,
    name: str,
    code: str = Query("", max_length=4000),
    state: str = Query("", max_length=400),
    error: str = Query("", max_length=200),
    iss: str = Query("", max_length=400),
    pt: Portal = Depends(portal),
) -> Response:
    provider = _provider(pt, name)
    ip = client_ip(request)
    # its own session, not a GET's read-first one: the account is read and then written under the write lock
    with pt.db.sessions() as s:
        try:
            taken = sso_flow.take_state(s, provider, state)
            s.commit()  # the state is spent whatever follows
            bound = request.cookies.get(STATE_COOKIE, "")
            if not bound or not secrets.compare_digest(bound.encode(), state.encode()):
                raise SignInRefused(
                    "This sign-in was started in another browser window or has expired. "
                    "Start again from the sign-in page.",
                    "state not bound to this browser (no or another state cookie)",
                )
            if error:
                raise SignInRefused(
                    f"{provider.title} did not sign you in ({error[:100]}).", f"provider answered error {error[:100]}"
                )
            if iss and iss != provider.issuer:  # RFC 9207: the answer came from another provider (mix-up)
                raise SignInRefused(
                    "The sign-in answer came from an unexpected service. Start again from the sign-in page.",
                    f"authorization response from issuer {iss[:200]}",
                )
            verified = sso_flow.verify(provider, taken, code, _redirect_uri(request, provider))
            subject = str(verified.claims["sub"])
            try:
                user = sso.sign_in(s, provider, verified.claims, ip)
            except SignInRefused:
                s.commit()  # an account whose claims no longer map is disabled: keep that
                raise
        except SignInRefused as refusal:
            s.rollback()
            sso.record_refusal(s, provider.name, refusal, ip)
            s.commit()
            return _refused(request, provider, refusal)
        except BaseException:
            s.rollback()
            raise
        needs_second = accounts.second_factor_required(s, user)
        token, _row = sessions.create(
            s,
            user,
            kind="browser",
            ip=ip,
            lifetime=pt.session_max,
            name=SESSION_PREFIX + provider.name,
            second_factor_done=not needs_second,
        )
        sso.signed_in(s, user, provider, subject, ip, second_factor_next=needs_second)
        totp_enabled = user.totp_enabled
        s.commit()
    if needs_second:
        target = "/login/second-factor" if totp_enabled else "/login/enrol"
    else:
        target = _safe_next(taken.return_to)
    response = render(request, "sso_continue.html", target=target, title="Signed in", text="Signed in. Continuing")
    _set_session_cookie(request, response, token, pt.session_max)
    response.delete_cookie(STATE_COOKIE, path="/login/sso/")
    if provider.end_session and len(verified.id_token) <= _MAX_HINT:
        response.set_cookie(
            LOGOUT_COOKIE,
            verified.id_token,
            max_age=int(pt.session_max.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/logout",
        )
    return response
