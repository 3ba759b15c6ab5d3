"""Certificate sign-in (smart cards): GET or POST /login/certificate signs in the user the connection's
verified client certificate is registered to. The card (certificate and PIN) is both factors, so the
session needs no second factor. GET does it too, so that the login page's link is one click: it can only
ever sign the browser's own card holder in, never someone else."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from imex.auth import certificates, sessions
from imex.tls import client_certs
from imex.web.client_cert import presented, trust
from imex.web.context import Portal
from imex.web.deps import check_same_origin, client_ip, db_session, portal
from imex.web.pages.account import _safe_next, _set_session_cookie
from imex.web.pages.render import render

router = APIRouter(include_in_schema=False)


def _sign_in(request: Request, next_url: str, pt: Portal, s: Session) -> Response:
    if not client_certs.requested(pt.config):
        return render(
            request,
            "certificate_signin.html",
            status=404,
            error="Certificate sign-in is not turned on for this hub. Sign in with your password.",
        )
    ip = client_ip(request)
    cert = presented(request)
    try:
        user = certificates.sign_in(s, cert, ip, trust(pt.config))
    except certificates.CertificateRefused as exc:
        s.commit()  # keep the audit event
        return render(
            request,
            "certificate_signin.html",
            status=401 if cert is None else 403,
            error=exc.public,
            certificate=cert.label if cert is not None else "",
        )
    token, _ = sessions.create(s, user, kind="browser", ip=ip, lifetime=pt.session_max, second_factor_done=True)
    s.commit()
    response = RedirectResponse("/login/password" if user.must_change_password else next_url, status_code=303)
    _set_session_cookie(request, response, token, pt.session_max)
    return response


@router.get("/login/certificate")
def certificate_sign_in_link(
    request: Request,
    next: str = Query("/", max_length=500),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    return _sign_in(request, _safe_next(next), pt, s)


@router.post("/login/certificate")
def certificate_sign_in(
    request: Request,
    next: str = Query("/", max_length=500),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    check_same_origin(request)
    return _sign_in(request, _safe_next(next), pt, s)
