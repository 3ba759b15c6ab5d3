"""Errors as the caller understands them: JSON problem bodies (RFC 9457) for the API, readable pages for
people, and a redirect to the sign-in page when a page needs a session.

The one place a domain error becomes an HTTP status, by its type (imex.errors): NotFound 404, Conflict 409,
Invalid 422, Forbidden 403. Handlers let domain errors through; none picks a status from a message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from imex.auth.permissions import PermissionDenied
from imex.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, kind_of

ErrorPage = Callable[[Request, int, str, str], Response]  # (request, status, title, detail) -> the error page


class Problem(Exception):
    """An error with an HTTP status and a message saying what was wrong and what to do."""

    def __init__(self, status: int, detail: str, title: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title


class Refused(Problem):
    """A Problem whose audit event must be kept: the request's transaction commits before it is answered."""


class SignInRequired(Exception):
    """No valid session or token; `step` is where a page visitor is sent (sign in, second factor, ...)."""

    def __init__(self, detail: str = "sign in first", step: str = "/login") -> None:
        super().__init__(detail)
        self.detail = detail
        self.step = step


_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
}

STATUS: dict[type[DomainError], int] = {Forbidden: 403, NotFound: 404, Conflict: 409, Invalid: 422}


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain error, by its kind (a bare DomainError is a plain bad request)."""
    kind = kind_of(exc)
    return STATUS[kind] if kind is not None else 400


def detail_of(exc: DomainError) -> str:
    """What the caller reads: the error's message, or for a missing permission, which one and whom to ask."""
    if isinstance(exc, PermissionDenied):
        return f"You do not have the permission for this ({exc.permission}). Ask your institution's administrator."
    return str(exc) or ("no such object" if isinstance(exc, NotFound) else "the request was refused")


def refused(exc: DomainError) -> Refused:
    """The domain error as a Refused: answered the same, but its audit event of the refusal is kept."""
    return Refused(status_of(exc), detail_of(exc))


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def sign_in_answer(request: Request, exc: SignInRequired, *, as_json: bool | None = None) -> Response:
    """401 with a problem body for the API and scripts (or when `as_json`); a page visitor is sent to the
    sign-in step."""
    if as_json or (as_json is None and wants_json(request)):
        body = {"type": "about:blank", "title": _TITLES[401], "status": 401, "detail": exc.detail}
        response: Response = JSONResponse(body, status_code=401, media_type="application/problem+json")
        response.headers["WWW-Authenticate"] = 'Bearer realm="imex"'
        return response
    target = exc.step
    if exc.step == "/login" and request.method == "GET":
        target += "?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
    return RedirectResponse(target, status_code=303)


def problem_response(
    request: Request, error_page: ErrorPage, status: int, detail: str, title: str = "", extra: dict | None = None
) -> Response:
    title = title or _TITLES.get(status, "Error")
    if wants_json(request):
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **(extra or {})}
        return JSONResponse(body, status_code=status, media_type="application/problem+json")
    return error_page(request, status, title, detail)


def install(app: FastAPI, error_page: ErrorPage) -> None:
    """Answer every error the app raises: JSON for the API, `error_page` (the portal's) for people."""

    def problem(request: Request, status: int, detail: str, title: str = "") -> Response:
        return problem_response(request, error_page, status, detail, title)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem(request, exc.status, exc.detail, exc.title)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        return problem(request, status_of(exc), detail_of(exc))

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return problem(request, 422, "; ".join(problems)[:2000] or "the request is not valid")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        logging.getLogger("imex.web").exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(request, 500, "Something went wrong on the hub; it has been logged.")
