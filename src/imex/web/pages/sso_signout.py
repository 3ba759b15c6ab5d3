"""Signing out of an identity provider too: a browser session made through an `[[oidc]]` provider with
`end_session = true` ends at the provider as well (OpenID Connect RP-Initiated Logout), with the ID token
it gave (kept in a cookie only /logout receives) as id_token_hint, and back to /login afterwards."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response

from imex.auth import oidc
from imex.auth.oidc_config import Provider
from imex.db.models import WebSession
from imex.web.context import Portal
from imex.web.pages.render import render

LOGOUT_COOKIE = "imex_sso_logout"  # the ID token, given back to the provider as id_token_hint at sign-out
SESSION_PREFIX = "sso:"  # the name of a browser session made through a provider: sso:<provider>


def hub_address(request: Request, provider: Provider) -> str:
    """This hub's address as the provider knows it: from redirect_uri when configured, else as the browser used."""
    if provider.redirect_uri:
        parts = urlsplit(provider.redirect_uri)
        return f"{parts.scheme}://{parts.netloc}"
    return str(request.base_url).rstrip("/")


def sign_out_elsewhere(request: Request, pt: Portal, row: WebSession) -> Response | None:
    """For a session made through a provider with end_session: a page that sends the browser on to the
    provider's sign-out (with the ID token as id_token_hint, and back to /login afterwards). None otherwise.
    A page, not a redirect: the sign-out is a form post, and CSP form-action keeps its redirects on this site."""
    if not row.name.startswith(SESSION_PREFIX):
        return None
    provider = pt.sso.get(row.name[len(SESSION_PREFIX) :])
    if provider is None or not provider.end_session:
        return None
    target = oidc.end_session_url(
        provider, request.cookies.get(LOGOUT_COOKIE, ""), f"{hub_address(request, provider)}/login"
    )
    if not target:
        return None
    response = render(
        request, "sso_continue.html", target=target, title="Signed out", text=f"Signing you out of {provider.title}"
    )
    response.delete_cookie(LOGOUT_COOKIE, path="/logout")
    return response
