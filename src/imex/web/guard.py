"""What every HTTP exchange goes through: security headers on each response (error pages included: the
app wraps its whole stack in SecurityHeaders), a limit on request bodies enforced while they arrive (a
declared Content-Length too large is refused before reading; a chunked body is cut off as soon as it
passes the limit), so one caller cannot fill the hub's memory, and no body read before the caller is
known (SignedInFirst)."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
}


def security_headers(
    headers: list[tuple[bytes, bytes]], *, static: bool = False, https: bool = False
) -> list[tuple[bytes, bytes]]:
    """`headers` with the security headers set (any the app set of the same names replaced)."""
    out = [(k, v) for k, v in headers if k.lower() not in HEADERS]
    out += list(HEADERS.items())
    if not static:  # pages and API answers hold patient data: never cached
        out = [(k, v) for k, v in out if k.lower() != b"cache-control"]
        out.append((b"cache-control", b"no-store"))
    if https:
        out.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return out


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": security_headers(list(message.get("headers", [])), static=static, https=https),
                }
            await send(message)

        await self.app(scope, receive, send_with_headers)


_SERVER_REFUSALS = {
    503: ("Service unavailable", "The hub is serving as many requests as it can; try again shortly."),
    431: (
        "Request header fields too large",
        "The request's head (request line and headers) is larger than this hub accepts (http.max_header_bytes).",
    ),
}


async def unavailable(scope: Scope, receive: Receive, send: Send, status: int = 503) -> None:
    """503 when the server is at http.max_connections, 431 for an oversized request head (answered by the
    server, outside the app), with the security headers all the same."""
    title, detail = _SERVER_REFUSALS[status]
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ] + ([(b"retry-after", b"5")] if status == 503 else [])
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": security_headers(headers, https=scope.get("scheme") == "https"),
        }
    )
    await send({"type": "http.response.body", "body": body})


class ErrorsAnswered:
    """Around the whole app: an exception the app has already answered (its 500 page went out whole, and its
    handler logged it) ends the request normally, so the server keeps the keep-alive connection rather
    than dropping it under the client's next request. One not yet answered goes on to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def watched(message: Message) -> None:
            nonlocal complete
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if not complete:
                raise


class TooLarge(Exception):
    pass


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Request too large",
            "status": 413,
            "detail": f"The request body is larger than this hub accepts ({limit} bytes).",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """`max_bytes` for every request, except paths under a prefix of `uploads` (e.g. STOW-RS), which get
    their own, larger limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.uploads = dict(uploads or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        limit = next((n for prefix, n in self.uploads.items() if path.startswith(prefix)), self.default_bytes)
        if scope["type"] != "http" or limit <= 0:
            await self.app(scope, receive, send)
            return
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await _refuse(send, limit)
                    return
        received = 0
        over = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise TooLarge()
            return message

        async def checked_send(message: Message) -> None:
            # the framework turns a body-reading error into its own 400: answer 413 instead
            nonlocal answered
            if over:
                if not answered:
                    answered = True
                    await _refuse(send, limit)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, checked_send)
        except TooLarge:
            if not answered:
                await _refuse(send, limit)


# Routes that take a body from a caller not yet signed in: the sign-in forms and steps (the partly signed-in
# ones check their own session), the token exchange, sign-out, and an outside recipient's link pages.
PUBLIC_BODY_PATHS = frozenset({"/login", "/logout", "/api/v1/auth/token"})
PUBLIC_BODY_PREFIXES = ("/login/", "/l/")
MACHINE_PREFIXES = ("/dicomweb/", "/fhir/")  # answered 401 like the API, never sent to the sign-in page


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


class SignedInFirst:
    """Who is calling is checked before any request body is read: a request that carries a body to a route
    other than the sign-in ones, without a live session or API token of a fully signed-in user, is answered
    401 (or sent to the sign-in page) at once, with `Connection: close`, and its body is never read. The
    route's own dependency (`deps.signed_in`) then checks again, with CSRF, permissions and scope. Under
    /scim/v2 the caller is a directory, known by its own bearer token (`scim.body_refusal`) instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if (
            scope["type"] != "http"
            or not _has_body(scope)
            or path in PUBLIC_BODY_PATHS
            or path.startswith(PUBLIC_BODY_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        from imex.web import scim  # SCIM directories carry their own token, not a portal user's
        from imex.web.deps import caller_refusal  # deps needs the portal's database; imported late
        from imex.web.errors import sign_in_answer

        request = Request(scope)
        if scim.is_scim_path(path):
            response = await run_in_threadpool(scim.body_refusal, request)
        else:
            refusal = await run_in_threadpool(caller_refusal, request)
            response = (
                None
                if refusal is None
                else sign_in_answer(request, refusal, as_json=True if path.startswith(MACHINE_PREFIXES) else None)
            )
        if response is None:
            await self.app(scope, receive, send)
            return
        response.headers["connection"] = "close"  # the server then drops the connection, body unread

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)
