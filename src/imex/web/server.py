"""The HTTP listener: uvicorn's settings (HTTPS with the BCP 195 profile when http.tls is on, which reverse
proxies are believed for X-Forwarded-*, limits and timeouts), and its connection handling: uvicorn's h11
protocol with a deadline for every request head and a cap on the connections still sending one.

Uvicorn bounds neither how long a client may take to send its request head (a connection that trickles a
header line every few seconds is kept for ever) nor how many such connections there are, and its
`limit_concurrency` counts them with the rest: a thousand slow-header connections made every request
answer 503. Here a connection waiting for its request head (a new one, or a keep-alive one between
requests) is "pending":

- it must complete the head within `http.header_timeout` of starting to wait, however it trickles it;
- at most `http.max_pending` are pending at once, and `http.max_pending_per_address` from one address
  (trusted proxies excepted); one more drops the one waiting longest, since an honest client sends its
  head within milliseconds, so a flood must outpace it rather than merely outwait it;
- `http.max_connections` counts only the connections past their head (answered 503 beyond, with the
  security headers like every other response).

On HTTPS the protocol also hands the application what the handshake verified about the client (its
certificate, with http.client_certificates) as the ASGI TLS extension, scope["extensions"]["tls"].
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from imex.config import Config
from imex.tls import client_certs
from imex.tls.files import https_context
from imex.web.guard import security_headers, unavailable

log = logging.getLogger("imex.web")


@dataclass
class Pending:
    """The connections waiting for a request head, oldest first, overall and per address."""

    limit: int
    per_address: int
    exempt: frozenset[str] = frozenset()
    waiting: dict[Any, str] = field(default_factory=dict)  # insertion order is waiting order
    by_address: dict[str, dict[Any, None]] = field(default_factory=dict)
    dropped: int = 0
    _warned_at: float = -10.0
    refused: int = 0  # answered 503 (http.max_connections) since the last warning
    refused_warned_at: float = -10.0

    def __contains__(self, conn: object) -> bool:
        return conn in self.waiting

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, conn: Any, address: str) -> list[Any]:
        """Register `conn`; returns the connections to drop to make room (never `conn` itself)."""
        self.waiting[conn] = address
        mine = self.by_address.setdefault(address, {})
        mine[conn] = None
        drop = []
        if self.per_address > 0 and address not in self.exempt:
            while len(mine) > self.per_address:
                oldest = next(iter(mine))
                self.remove(oldest)
                drop.append(oldest)
        if self.limit > 0:
            while len(self.waiting) > self.limit:
                oldest = next(iter(self.waiting))
                self.remove(oldest)
                drop.append(oldest)
        if drop:
            self.dropped += len(drop)
            now = time.monotonic()
            if now - self._warned_at >= 10.0:
                log.warning(
                    "HTTP: %d connection(s) dropped that had not sent their request head (more than "
                    "http.max_pending or http.max_pending_per_address waiting)",
                    self.dropped,
                )
                self._warned_at, self.dropped = now, 0
        return drop

    def remove(self, conn: Any) -> None:
        address = self.waiting.pop(conn, None)
        if address is None:
            return
        mine = self.by_address.get(address)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_address[address]


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    max_connections: int | None
    pending: Pending
    max_header_bytes: int = 0


def head_size(scope: Any) -> int:
    """The size of a request head as it came: request line and header lines."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the request-head deadline and the pending cap of `limits`."""

    limits: ClassVar[Limits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._tls: dict[str, Any] | None = None  # the ASGI TLS extension of this connection
        self.limit_concurrency = None  # counted in _admit, without the pending connections
        self._served_app = self.app
        self.app = self._admit

    async def _admit(self, scope: Any, receive: Any, send: Any) -> None:
        if self._tls is not None:  # uvicorn leaves the peer's certificate out of the scope
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": dict(self._tls)}
        if self.limits.max_header_bytes and scope["type"] == "http" and head_size(scope) > self.limits.max_header_bytes:
            # h11 refuses a larger head only while it is incomplete: one that came in a single read lands here
            await unavailable(scope, receive, send, status=431)
            return
        limit = self.limits.max_connections
        if limit is not None and scope["type"] == "http":
            pending = self.limits.pending
            busy = sum(1 for c in self.connections if c not in pending and not c.transport.is_closing())
            if busy > limit or len(self.tasks) > limit:
                pending.refused += 1
                now = time.monotonic()
                if now - pending.refused_warned_at >= 10.0:
                    log.warning(
                        "HTTP: %d request(s) answered 503: more than http.max_connections (%d) busy",
                        pending.refused,
                        limit,
                    )
                    pending.refused, pending.refused_warned_at = 0, now
                await unavailable(scope, receive, send)
                return
        await self._served_app(scope, receive, send)

    # -- the pending state follows h11's: waiting for a head while the client's side is IDLE
    def _sync(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        pending = self.limits.pending
        if waiting and self not in pending:
            self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._too_slow)
            for other in pending.add(self, self.client[0] if self.client else ""):
                other._drop()
        elif not waiting and self in pending:
            self._leave()

    def _leave(self) -> None:
        self.limits.pending.remove(self)
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _drop(self) -> None:
        self._leave()
        if not self.transport.is_closing():
            self.transport.close()

    def _too_slow(self) -> None:
        self._head_deadline = None
        if self in self.limits.pending:
            self._drop()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:  # called once the handshake is done: the client certificate is verified
            self._tls = client_certs.asgi_tls_extension(ssl_object)
        self._sync()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._sync()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed or oversized request head, with the security headers too."""
        headers = security_headers(
            [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")], https=self.scheme == "https"
        )
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=msg.encode("ascii")),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def protocol_for(config: Config) -> type[GuardedH11Protocol]:
    """A protocol class bound to one server's limits (each server counts its own connections)."""
    proxies = frozenset(trusted_proxies(config))
    limits = Limits(
        header_timeout=float(config["http.header_timeout"]),
        max_connections=config["http.max_connections"] or None,
        pending=Pending(config["http.max_pending"], config["http.max_pending_per_address"], proxies),
        max_header_bytes=config["http.max_header_bytes"],
    )
    return type("ImexH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def trusted_proxies(config: Config) -> list[str]:
    return [p.strip() for p in config["http.trusted_proxies"].split(",") if p.strip()]


def uvicorn_config(app: Any, config: Config) -> uvicorn.Config:
    """The server's settings: X-Forwarded-For and -Proto believed only from http.trusted_proxies (none by
    default), the request-head deadline and connection caps of GuardedH11Protocol, keep-alive, head size
    and listen backlog; HTTPS with the hub's own TLS profile when http.tls is on."""
    proxies = trusted_proxies(config)
    result = uvicorn.Config(
        app,
        host=config["http.host"],
        port=config["http.port"],
        log_level="warning",
        access_log=False,
        http=protocol_for(config),
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        timeout_keep_alive=config["http.keepalive_timeout"],
        limit_concurrency=config["http.max_connections"] or None,
        h11_max_incomplete_event_size=config["http.max_header_bytes"],
        backlog=config["http.backlog"],
        server_header=False,
    )
    if config["http.tls"]:
        context = https_context(config)  # raises at start-up when the files are missing
        result.load()
        # uvicorn's own context would allow TLS 1.0 and its default ciphers; it keeps the one it is given,
        # so each handshake switches to the current files (a new CRL refuses a revoked card at once)
        result.ssl = context.switching()
    return result
