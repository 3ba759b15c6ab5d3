"""Single sign-ons under way. Starting one stores its state, nonce and PKCE verifier (`sso_logins`), so
whichever process takes the provider's callback can finish it; the callback takes the state at most once,
within STATE_MINUTES, for the provider that issued it, then exchanges the code and checks the ID token."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from imex.auth import oidc
from imex.auth.oidc_config import Provider
from imex.auth.sso import SignInRefused
from imex.db.models import SsoLogin, utcnow

STATE_MINUTES = 10
MAX_UNDER_WAY = 5000  # sign-ins started and not finished within STATE_MINUTES, all providers together

_UNREACHABLE = "The organisation's sign-in service could not be reached. Try again in a few minutes."
_START_AGAIN = "This sign-in link is no longer valid. Start again from the sign-in page."


def start(session: Session, provider: Provider, redirect_uri: str, return_to: str) -> oidc.Request:
    """A new sign-in: its row (old ones swept away) and the provider's URL to send the browser to."""
    now = utcnow()
    window = now - dt.timedelta(minutes=STATE_MINUTES)
    under_way = session.scalar(
        select(func.count()).select_from(SsoLogin).where(SsoLogin.created_at >= window, SsoLogin.used_at.is_(None))
    )
    if (under_way or 0) >= MAX_UNDER_WAY:
        raise SignInRefused("Too many sign-ins are under way; try again in a minute.", "too many sign-ins under way")
    try:  # before any write: on SQLite a write would hold the lock while the provider answers
        request = oidc.authorization_request(provider, redirect_uri)
    except oidc.ProviderError as exc:
        raise SignInRefused(_UNREACHABLE, f"discovery failed: {exc}") from None
    session.execute(delete(SsoLogin).where(SsoLogin.created_at < window - dt.timedelta(minutes=1)))
    session.add(
        SsoLogin(
            state=request.state,
            provider=provider.name,
            nonce=request.nonce,
            code_verifier=request.code_verifier,
            return_to=return_to[:400],
            created_at=now,
        )
    )
    session.flush()
    return request


@dataclass(frozen=True)
class Taken:
    """What the callback needs of a sign-in it took (detached from the session, which commits at once)."""

    nonce: str
    code_verifier: str
    return_to: str


def take_state(session: Session, provider: Provider, state: str) -> Taken:
    """The sign-in `state` names, marked used in this transaction (one UPDATE: two callbacks racing with the
    same state, in any processes, cannot both have it); SignInRefused when it is unknown, used, too old, or
    another provider's."""
    now = utcnow()
    if not state or len(state) > 128:
        raise SignInRefused(_START_AGAIN, "no state" if not state else "state too long")
    taken = session.execute(
        update(SsoLogin)
        .where(
            SsoLogin.state == state,
            SsoLogin.provider == provider.name,
            SsoLogin.used_at.is_(None),
            SsoLogin.created_at >= now - dt.timedelta(minutes=STATE_MINUTES),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    row = session.scalar(select(SsoLogin).where(SsoLogin.state == state).execution_options(populate_existing=True))
    if taken.rowcount == 1 and row is not None:  # type: ignore[attr-defined]
        return Taken(row.nonce, row.code_verifier, row.return_to)
    if row is None:
        raise SignInRefused(_START_AGAIN, "unknown state")
    if row.provider != provider.name:
        raise SignInRefused(_START_AGAIN, f"state of another provider ({row.provider})")
    if row.used_at is not None:
        raise SignInRefused(_START_AGAIN, "state already used (a replayed callback)")
    raise SignInRefused(_START_AGAIN, f"state older than {STATE_MINUTES} minutes")


@dataclass(frozen=True)
class Verified:
    claims: dict[str, Any]
    id_token: str


def verify(provider: Provider, login: Taken, code: str, redirect_uri: str) -> Verified:
    """Exchange the code (with the sign-in's PKCE verifier) and check the ID token against its nonce.
    Talks to the provider: call it with no transaction holding locks."""
    if not code or len(code) > 2000:
        raise SignInRefused(_START_AGAIN, "no authorization code" if not code else "authorization code too long")
    try:
        token = oidc.exchange_code(provider, code, login.code_verifier, redirect_uri)
        claims = oidc.validate_id_token(
            provider, token["id_token"], login.nonce, access_token=token.get("access_token") or None
        )
    except oidc.ProviderError as exc:
        raise SignInRefused(_UNREACHABLE, str(exc)) from None
    except oidc.TokenRefused as exc:
        raise SignInRefused(
            "The sign-in could not be completed: the answer from the organisation's sign-in service did not pass "
            "imex's checks. Start again from the sign-in page; if it happens again, tell your imex administrator.",
            str(exc),
        ) from None
    return Verified(claims, token["id_token"])
