"""The MLLP listener: HL7 v2 messages framed as <VT> message <FS><CR> over TCP (optionally TLS), each
answered with the ACK the handler returns. It runs an asyncio loop in its own thread; the handler (which
touches the database) runs in a thread pool so a slow commit does not stall other connections.

Nothing a client sends is buffered before it is known: a connection is accepted here (not by asyncio's
server), its address is checked with `allow` (the registered RIS endpoints) before the TLS handshake and
before any byte is read, and an unknown address is closed at once. Open connections are capped overall
(`max_connections`) and per address (`max_connections_per_address`); one more is closed at once. Each
message must arrive whole within `message_timeout` of its first byte (trickling bytes does not extend
it), and the TLS handshake within the same time; a connection silent between messages for
`idle_timeout` is closed.

Bad input never stops the listener: bytes outside a frame close that connection, a message larger than
`max_bytes` (the bytes between the start block and the end block) is answered AR and its connection
closed, and a handler error is answered AE.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from imex.hl7.build import ack
from imex.hl7.parse import HL7Reject, read_header

log = logging.getLogger("imex.hl7.mllp")

START, END = b"\x0b", b"\x1c\x0d"
_FS = 0x1C
_BLANKS = b"\r\n \t"  # tolerated between frames
Handler = Callable[[bytes, str], bytes]
ALLOW_CHECK_SECONDS = 10.0  # longest wait for `allow` (a database read, a DNS lookup) before refusing


def frame(message: bytes) -> bytes:
    return START + message + END


def _header_of(prefix: bytes):
    try:
        return read_header(prefix.split(b"\r", 1)[0] + b"\r")
    except HL7Reject:
        return None


class _Refusals:
    """Log lines for refused connections, at most one a minute per (reason, address) with the count of
    those not logged, so a flood cannot flood the log."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warn(self, reason: str, peer: str, text: str, *args: object) -> None:
        now = time.monotonic()
        key = (reason, peer)
        last, quiet = self._last.get(key, (-3600.0, 0))
        if now - last < 60.0:
            self._last[key] = (last, quiet + 1)
            return
        if len(self._last) > 4096:
            self._last.clear()
        self._last[key] = (now, 0)
        suffix = f" ({quiet} more not logged in the last minute)" if quiet else ""
        log.warning(text + suffix, *args)


def _listening_socket(host: str, port: int) -> socket.socket:
    family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class MllpListener:
    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        max_bytes: int = 4 * 1024 * 1024,
        idle_timeout: float = 300.0,
        message_timeout: float = 60.0,
        max_connections: int = 64,
        max_connections_per_address: int = 8,
        allow: Callable[[str], bool] | None = None,
        tls_cert: str = "",
        tls_key: str = "",
        workers: int = 4,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.max_connections = max_connections  # 0: no cap
        self.max_connections_per_address = max_connections_per_address  # 0: only max_connections
        self.allow = allow  # None: every address may connect (a test's RIS stand-in)
        self.ssl: ssl.SSLContext | None = ssl_context  # from imex.tls (BCP 195 profile, client certificates)
        if tls_cert and ssl_context is None:
            self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl.load_cert_chain(tls_cert, tls_key or None)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hl7")
        # address checks have their own thread, so slow handlers never hold up (or open) the door
        self.checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-check")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.open = 0  # connections accepted and not yet closed (including those being checked)
        self.by_address: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals = _Refusals()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="hl7-listener", daemon=True)
        self.thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.sock = _listening_socket(self.host, self.port)
            self.port = self.sock.getsockname()[1]
        except BaseException as exc:  # the port is taken, the address is not this machine's, ...
            self._error = exc
            self._ready.set()
            self.loop.close()
            return
        self._ready.set()
        try:
            self.loop.run_until_complete(self._accept(self.sock))
        except asyncio.CancelledError:
            pass
        finally:
            self.sock.close()
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.wait(pending, timeout=5))
            finally:
                self.loop.close()

    def stop(self) -> None:
        if self.loop is not None and not self.loop.is_closed():

            def close() -> None:
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()

            try:
                self.loop.call_soon_threadsafe(close)
            except RuntimeError:
                pass
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.checks.shutdown(wait=False, cancel_futures=True)

    # -- accepting ------------------------------------------------------------------------------------

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as exc:  # out of file descriptors, ...: wait a little rather than spin
                log.warning("MLLP listener cannot accept a connection: %s", exc)
                await asyncio.sleep(0.5)
                continue
            peer = str(address[0]) if isinstance(address, tuple) and address else "?"
            if self.max_connections and self.open >= self.max_connections:
                self._refusals.warn(
                    "cap",
                    "",
                    "MLLP connection from %s closed: %d connections are open, the most hl7.max_connections allows",
                    peer,
                    self.open,
                )
                sock.close()
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.open += 1
            task = loop.create_task(self._connection(sock, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _allowed(self, peer: str) -> bool:
        if self.allow is None:
            return True
        loop = asyncio.get_running_loop()
        try:
            return bool(
                await asyncio.wait_for(loop.run_in_executor(self.checks, self.allow, peer), ALLOW_CHECK_SECONDS)
            )
        except Exception as exc:  # the check failed (database down, ...): nobody unchecked gets in
            self._refusals.warn(
                "check", "", "MLLP connection from %s closed: its address could not be checked (%s)", peer, repr(exc)
            )
            return False

    async def _connection(self, sock: socket.socket, peer: str) -> None:
        counted = False
        writer: asyncio.StreamWriter | None = None
        try:
            if not await self._allowed(peer):
                self._refusals.warn(
                    "unknown",
                    peer,
                    "MLLP connection from %s closed: not the address of a registered RIS endpoint ([[ris]] peer_host)",
                    peer,
                )
                return
            per_address = self.by_address.get(peer, 0)
            if self.max_connections_per_address and per_address >= self.max_connections_per_address:
                self._refusals.warn(
                    "address",
                    peer,
                    "MLLP connection from %s closed: %d connections from that "
                    "address are open, the most hl7.max_connections_per_address allows",
                    peer,
                    per_address,
                )
                return
            self.by_address[peer] = per_address + 1
            counted = True
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=64 * 1024)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=self.ssl,
                ssl_handshake_timeout=self.message_timeout if self.ssl is not None else None,
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve(reader, writer, peer)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("MLLP connection from %s ended: %s", peer, exc)
        except asyncio.CancelledError:
            pass
        finally:
            self.open -= 1
            if counted:
                left = self.by_address.get(peer, 1) - 1
                if left > 0:
                    self.by_address[peer] = left
                else:
                    self.by_address.pop(peer, None)
            if writer is None:
                sock.close()
            else:
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 2)
                except (Exception, asyncio.CancelledError):
                    pass

    # -- one connection -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        buffer = bytearray()
        while True:
            message = await self._next_message(reader, buffer, writer, peer)
            if message is None:
                return
            answer = await asyncio.get_running_loop().run_in_executor(self.pool, self._handle, message, peer)
            writer.write(frame(answer))
            await writer.drain()

    async def _read(self, reader: asyncio.StreamReader, deadline: float, size: int = 256 * 1024) -> bytes:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        return await asyncio.wait_for(reader.read(size), left)

    async def _next_message(
        self, reader: asyncio.StreamReader, buffer: bytearray, writer: asyncio.StreamWriter, peer: str
    ) -> bytes | None:
        """The next framed message, or None when the connection should close (EOF, bad framing, too big,
        too slow)."""
        loop = asyncio.get_running_loop()
        idle_deadline = loop.time() + self.idle_timeout  # blanks between frames are not activity
        deadline: float | None = None  # of the message, from its first byte
        while True:
            if deadline is None:
                del buffer[: len(buffer) - len(buffer.lstrip(_BLANKS))]
                if buffer:
                    if buffer[:1] != START:
                        log.warning("MLLP connection from %s sent bytes outside a frame; closing it", peer)
                        return None
                    deadline = loop.time() + self.message_timeout
            if buffer:
                end = buffer.find(END)
                if end > 0:
                    if end - 1 > self.max_bytes:
                        await self._refuse(buffer, writer, peer)
                        return None  # the whole message is here: nothing more to drop
                    message = bytes(buffer[1:end])
                    del buffer[: end + len(END)]
                    return message
                # the bytes so far, less a last FS that may begin the end block
                if len(buffer) - 1 - (buffer[-1] == _FS) > self.max_bytes:
                    await self._refuse(buffer, writer, peer)
                    assert deadline is not None
                    await self._discard_rest(reader, buffer, deadline)
                    return None
            try:
                chunk = await self._read(reader, deadline if deadline is not None else idle_deadline)
            except TimeoutError:
                if deadline is not None:
                    log.warning(
                        "MLLP message from %s not complete %.0f s after its first byte "
                        "(hl7.message_timeout); closing the connection",
                        peer,
                        self.message_timeout,
                    )
                else:
                    log.debug("MLLP connection from %s idle for %.0f s; closing it", peer, self.idle_timeout)
                return None
            if not chunk:
                if buffer.strip(_BLANKS):
                    log.warning("MLLP connection from %s closed in the middle of a message", peer)
                return None
            buffer.extend(chunk)

    async def _refuse(self, buffer: bytearray, writer: asyncio.StreamWriter, peer: str) -> None:
        log.warning("MLLP message from %s exceeds %d bytes; refused", peer, self.max_bytes)
        answer = ack(
            _header_of(bytes(buffer[1:4096])), "AR", f"message exceeds the limit of {self.max_bytes} bytes", "207"
        )
        writer.write(frame(answer))
        await writer.drain()

    async def _discard_rest(self, reader: asyncio.StreamReader, buffer: bytearray, deadline: float) -> None:
        """Read and drop the rest of a refused message (up to 64 times the limit, until the message's
        deadline), so the sender, still writing, can read the AR instead of seeing its connection reset."""
        tail = bytes(buffer[-1:])
        buffer.clear()
        budget = 64 * self.max_bytes
        while budget > 0:
            try:
                chunk = await self._read(reader, deadline, 1024 * 1024)
            except TimeoutError:
                return
            if not chunk or END in tail + chunk:
                return
            tail = chunk[-1:]
            budget -= len(chunk)

    def _handle(self, message: bytes, peer: str) -> bytes:
        try:
            return self.handler(message, peer)
        except Exception as exc:  # the sender gets an answer, and the listener carries on
            log.exception("HL7 message from %s could not be handled", peer)
            return ack(_header_of(message[:4096]), "AE", f"internal error: {type(exc).__name__}", "207")
