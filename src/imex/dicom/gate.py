"""The way into the DICOM listener: every connection from accept() until its A-ASSOCIATE-RQ is whole,
on one thread with a selector.

Whoever can open a TCP connection reaches this phase, before anything proves who they are, so it is
bounded as a whole (PS3.8's ARTIM timer runs from the connection to the request, not per read): one
deadline from accept to the complete request, TLS handshake included; a cap on the connections still
negotiating, and a smaller one per source address. A slow or idle caller costs a socket and a small
buffer, never a thread, and it never holds one of the association slots that registered nodes use.
When a cap is reached the connection that has waited longest is dropped to make room: an honest caller
sends its request within milliseconds, so only callers that dawdle lose their place.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

from imex.dicom.net import printable  # (importing it escapes pynetdicom's log records too)
from imex.dicom.upper_layer import ABORT

log = logging.getLogger("imex.dicom.acceptor")

# what `on_request` gets: the socket (blocking again, TLS done), the peer's address, the whole PDU
RequestHandler = Callable[[socket.socket, str, bytes], None]


class _Pending:
    """A connection still negotiating: its deadline, and the bytes of its first PDU so far."""

    __slots__ = ("buffer", "deadline", "handshaking", "need", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, deadline: float, handshaking: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.handshaking = handshaking
        self.buffer = bytearray()
        self.need = 6  # the PDU header, then the whole PDU


class Tally:
    """Warnings about dropped connections, at most one line per kind every `every` seconds with how many
    there were: a flood must not flood the log too."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def note(self, kind: str, message: str, peer: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self.last.get(kind, -self.every) >= self.every:
            count = self.counts.pop(kind)
            self.last[kind] = now
            log.warning("%s (%d since the last such line; latest from %s)", message, count, printable(peer))


class Gate:
    """Accepts connections on `sock` and hands each complete A-ASSOCIATE-RQ (or whatever PDU came first)
    to `on_request`, on this gate's thread; drops what does not arrive within `deadline` seconds."""

    def __init__(
        self,
        sock: socket.socket,
        on_request: RequestHandler,
        *,
        deadline: float,
        max_pending: int,
        max_per_address: int,
        max_request: int,
        tls: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.sock = sock
        self.on_request = on_request
        self.deadline = deadline
        self.max_pending = max(1, max_pending)
        self.max_per_address = max_per_address
        self.max_request = max_request
        self.tls = tls
        self._pending: dict[int, _Pending] = {}  # by file descriptor, oldest first
        self._per_address: dict[str, int] = {}
        self._lock = threading.Lock()
        self._tally = Tally()
        self._closing = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="dicom-gate", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> list[socket.socket]:
        """Connections still negotiating."""
        with self._lock:
            return [p.sock for p in self._pending.values()]

    def close(self) -> None:
        self._closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        for pending in list(self._pending.values()):
            self._drop(pending)
        for s in (self._wake_r, self._wake_w):
            s.close()
        self._selector.close()

    def _loop(self) -> None:
        while not self._closing:
            timeout = min((p.deadline for p in self._pending.values()), default=time.monotonic() + 60.0)
            try:
                events = self._selector.select(max(0.0, min(timeout - time.monotonic(), 60.0)))
            except OSError:
                if self._closing:
                    return
                raise
            for key, _mask in events:
                if key.data == "wake":
                    return
                try:
                    if key.data is None:
                        self._accept()
                    else:
                        self._progress(key.data)
                except Exception:  # a bug must not stop the listener: drop that connection, go on
                    log.exception("DICOM listener: error while accepting or negotiating")
                    if key.data is not None:
                        self._drop(key.data)
            now = time.monotonic()
            for pending in [p for p in self._pending.values() if p.deadline <= now]:
                self._tally.note(
                    "deadline",
                    f"closed connections that sent no complete association request within {self.deadline:g} s",
                    pending.peer,
                )
                self._drop(pending)

    def _accept(self) -> None:
        for _ in range(64):  # then serve the connections already here before accepting more
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: wait for the next round
                self._tally.note("accept", f"cannot accept connections: {exc}", "")
                return
            peer = str(address[0])
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
            except OSError:
                conn.close()
                continue
            self._make_room(peer)
            pending = _Pending(conn, peer, time.monotonic() + self.deadline, self.tls is not None)
            if self.tls is not None:
                try:
                    pending.sock = self.tls().wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as exc:
                    self._tally.note("tls", f"refused TLS connections: {printable(exc)}", peer)
                    conn.close()
                    continue
            with self._lock:
                self._pending[pending.sock.fileno()] = pending
                self._per_address[peer] = self._per_address.get(peer, 0) + 1
            self._selector.register(pending.sock, selectors.EVENT_READ, pending)
            self._progress(pending)  # a TLS handshake may have to speak first; data may be here already

    def _make_room(self, peer: str) -> None:
        """Drop the longest-waiting connection from `peer` when it has its share, or the longest-waiting
        of all when every place is taken."""
        if self.max_per_address and self._per_address.get(peer, 0) >= self.max_per_address:
            oldest = next(p for p in self._pending.values() if p.peer == peer)
            self._tally.note(
                "address",
                f"dropped connections still negotiating: more than {self.max_per_address} from one address",
                peer,
            )
            self._drop(oldest)
        if len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending.values()))
            self._tally.note(
                "full", f"dropped connections still negotiating: more than {self.max_pending} at once", oldest.peer
            )
            self._drop(oldest)

    def _forget(self, pending: _Pending) -> None:
        try:
            self._selector.unregister(pending.sock)
        except (KeyError, ValueError, OSError):
            pass
        with self._lock:
            if self._pending.pop(pending.sock.fileno(), None) is not None:
                left = self._per_address.get(pending.peer, 0) - 1
                if left > 0:
                    self._per_address[pending.peer] = left
                else:
                    self._per_address.pop(pending.peer, None)

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending)
        try:
            pending.sock.close()
        except OSError:
            pass

    def _want(self, pending: _Pending, event: int) -> None:
        try:
            self._selector.modify(pending.sock, event, pending)
        except (KeyError, ValueError, OSError):
            self._drop(pending)

    def _progress(self, pending: _Pending) -> None:
        sock = pending.sock
        if pending.handshaking:
            try:
                sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                self._want(pending, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._want(pending, selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError) as exc:
                reason = printable(getattr(exc, "verify_message", "") or exc)
                self._tally.note("tls", f"refused TLS connections: {reason}", pending.peer)
                self._drop(pending)
                return
            pending.handshaking = False
            self._want(pending, selectors.EVENT_READ)
        buffer = pending.buffer
        while len(buffer) < pending.need:
            try:
                chunk = sock.recv(pending.need - len(buffer))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._want(pending, selectors.EVENT_WRITE)
                return
            except OSError:  # reset, or a TLS error
                self._drop(pending)
                return
            if not chunk:  # closed before its request was whole
                self._drop(pending)
                return
            buffer += chunk
            if len(buffer) == 6:
                (length,) = struct.unpack_from(">L", buffer, 2)
                if length > self.max_request:
                    self._tally.note(
                        "oversize",
                        f"aborted connections whose first PDU declares more than {self.max_request} bytes",
                        pending.peer,
                    )
                    self._send_abort(sock, 0x06)  # service provider: invalid PDU parameter value
                    self._drop(pending)
                    return
                pending.need = 6 + length
        self._forget(pending)
        try:
            sock.setblocking(True)
        except OSError:
            sock.close()
            return
        try:
            self.on_request(sock, pending.peer, bytes(buffer))
        except Exception:
            log.exception("association request from %s could not be handled", printable(pending.peer))
            sock.close()

    @staticmethod
    def _send_abort(sock: socket.socket, reason: int) -> None:
        try:
            sock.send(struct.pack(">BBLBBBB", ABORT, 0, 4, 0, 0, 0x02, reason))
        except (OSError, ssl.SSLError):
            pass
