"""Who is calling: a browser session cookie (with CSRF protection on every change) or a bearer token.
Routes declare `principal: Principal = Depends(signed_in)` and read nothing else about the caller."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import sessions
from imex.auth.accounts import principal_for, second_factor_required
from imex.auth.permissions import PermissionDenied, Principal
from imex.auth.scope import NotVisible
from imex.db.models import utcnow
from imex.web.context import Portal
from imex.web.errors import Problem, Refused, SignInRequired

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
T = TypeVar("T")

# An object's ID in a URL: bounded so a huge number is a 422, not a database overflow
ObjectId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The object's ID")]


def portal(request: Request) -> Portal:
    return request.app.state.portal


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def db_session(request: Request, p: Portal = Depends(portal)) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back when it raises, except
    for refusals (not visible, not permitted, failed sign-in): those commit, so their audit events stay.
    GET, HEAD and OPTIONS read first: on SQLite they take the write lock only if they write (db.session)."""
    factory = p.db.read_sessions if request.method in SAFE_METHODS else p.db.sessions
    with factory() as s:
        try:
            yield s
            s.commit()
        except PermissionDenied as exc:
            s.rollback()
            who: Principal | None = getattr(request.state, "principal", None)
            if who is not None:
                audit.record(
                    s,
                    "access.denied",
                    outcome="denied",
                    object_type="permission",
                    object_id=exc.permission,
                    detail=f"{request.method} {request.url.path[:200]}",
                    **who.audit_fields(),
                )
            s.commit()
            raise
        except (NotVisible, Refused):
            s.commit()
            raise
        except BaseException:
            s.rollback()
            raise


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def check_same_origin(request: Request) -> None:
    """A change requested from another site's page is refused even before the CSRF token is looked at."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc and parts.netloc != request.headers.get("host", ""):
            raise Problem(403, "This request came from another site's page and was refused (cross-site request).")


def check_csrf(request: Request, expected: str, submitted: str | None = None) -> None:
    check_same_origin(request)
    given = submitted if submitted is not None else request.headers.get("x-csrf-token", "")
    if not given or not hmac.compare_digest(given, expected):
        raise Problem(
            403,
            "The form's security token is missing or out of date; reload the page and try again.",
            title="CSRF check failed",
        )


def _credentials(request: Request, s: Session, p: Portal, *, allow_partial: bool = False):
    """((session row, user), by cookie) of a caller whose session or token is live and who has finished
    signing in (second factor, forced password change) unless `allow_partial`; SignInRequired otherwise.
    Reads only headers and cookies: never the body."""
    token = _bearer(request)
    if token is not None:
        found = sessions.resolve(s, token, kind="token", idle=None)
        if found is None:
            raise SignInRequired("the API token is unknown, revoked or expired")
        if (
            found[1].must_change_password and not allow_partial
        ):  # a token must not outlive a one-time password's forced change
            raise SignInRequired(
                "this account must choose a new password before its API tokens work: "
                "sign in to the portal and change it"
            )
        return found, False
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        raise SignInRequired("sign in first")
    found = sessions.resolve(s, cookie, kind="browser", idle=p.session_idle)
    if found is None:
        raise SignInRequired("your session has ended; sign in again")
    row, user = found
    if not row.second_factor_done and user.locked_until is not None and user.locked_until > utcnow():
        raise SignInRequired("too many failed attempts: this account is locked for a while")  # a sign-in in progress
    if not allow_partial:
        if not row.second_factor_done and second_factor_required(s, user):
            raise SignInRequired(
                "finish signing in with your second factor",
                step="/login/enrol" if not user.totp_enabled else "/login/second-factor",
            )
        if user.must_change_password:
            raise SignInRequired("choose a new password first", step="/login/password")
    return found, True


def _resolve(request: Request, s: Session, p: Portal, *, allow_partial: bool = False):
    found, by_cookie = _credentials(request, s, p, allow_partial=allow_partial)
    if by_cookie and request.method not in SAFE_METHODS and not allow_partial:  # sign-in steps check their form's
        check_csrf(request, found[0].csrf_token)
    return found, by_cookie


def caller_refusal(request: Request) -> SignInRequired | None:
    """Why the caller of `request` is not signed in (None when they are), from its headers and cookies
    alone: what guard.SignedInFirst asks before letting a body be read. Changes nothing."""
    p = portal(request)
    with p.db.read_sessions() as s:
        try:
            _credentials(request, s, p)
        except SignInRequired as exc:
            return exc
        finally:
            s.rollback()  # resolving may touch last_seen_at: the route's own check records that
    return None


def signed_in(request: Request, s: Session = Depends(db_session), p: Portal = Depends(portal)) -> Principal:
    (row, user), _ = _resolve(request, s, p)
    principal = principal_for(s, user, ip=client_ip(request), session_id=row.id)
    request.state.principal = principal
    request.state.csrf = row.csrf_token
    s.commit()  # end the transaction: on SQLite it holds the write lock, and the route may not need it
    return principal


def partly_signed_in(request: Request, s: Session = Depends(db_session), p: Portal = Depends(portal)):
    """A browser session between password and second factor (or forced password change)."""
    (row, user), by_cookie = _resolve(request, s, p, allow_partial=True)
    if not by_cookie:
        raise Problem(400, "this step is for browser sign-in")
    return row, user


def visible_or_deny(
    s: Session, principal: Principal, found: T | None, object_type: str, object_id: object, label: str = ""
) -> T:
    """`found` when the scoped query found it; otherwise audit the attempt and answer 404."""
    if found is None:
        deny(s, principal, object_type, object_id)
        raise NotVisible(f"no {label or object_type} {object_id}")
    return found


def deny(s: Session, principal: Principal, object_type: str, object_id: object, action: str = "access.denied") -> None:
    """Audit an attempt to reach something the principal may not see; the caller then answers 404."""
    audit.record(
        s,
        action,
        outcome="denied",
        object_type=object_type,
        object_id=str(object_id)[:64],
        detail=f"{object_type} {str(object_id)[:64]} is not visible to {principal.institution_ods}",
        **principal.audit_fields(),
    )
