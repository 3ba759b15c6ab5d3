"""The MLLP listener: HL7 v2 messages framed as <VT> message <FS><CR> over TCP (optionally TLS), each
answered with the ACK the handler returns. It runs an asyncio loop in its own thread; the handler (which
touches the database) runs in a thread pool so a slow commit does not stall other connections.

Bad input never stops the listener: bytes outside a frame close that connection, a message larger than
`max_bytes` is answered AR and its connection closed, and a handler error is answered AE.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from imex.hl7.build import ack
from imex.hl7.parse import HL7Reject, read_header

log = logging.getLogger("imex.hl7.mllp")

START, END = b"\x0b", b"\x1c\x0d"
Handler = Callable[[bytes, str], bytes]


def frame(message: bytes) -> bytes:
    return START + message + END


def _header_of(prefix: bytes):  # type: ignore[no-untyped-def]
    try:
        return read_header(prefix.split(b"\r", 1)[0] + b"\r")
    except HL7Reject:
        return None


class MllpListener:
    def __init__(self, handler: Handler, host: str, port: int, *, max_bytes: int = 4 * 1024 * 1024,
                 idle_timeout: float = 300.0, tls_cert: str = "", tls_key: str = "", workers: int = 4,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.ssl: ssl.SSLContext | None = ssl_context  # from imex.tls (BCP 195 profile, client certificates)
        if tls_cert and ssl_context is None:
            self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl.load_cert_chain(tls_cert, tls_key or None)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hl7")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.base_events.Server | None = None
        self.thread: threading.Thread | None = None
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
            self.server = self.loop.run_until_complete(asyncio.start_server(
                self._connection, self.host, self.port, ssl=self.ssl, limit=64 * 1024))
            self.port = self.server.sockets[0].getsockname()[1]
        except BaseException as exc:  # the port is taken, the certificate cannot be read, ...
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_until_complete(self.server.serve_forever())
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def stop(self) -> None:
        if self.loop is not None and self.server is not None and not self.loop.is_closed():
            def close() -> None:
                assert self.server is not None
                self.server.close()
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()
            try:
                self.loop.call_soon_threadsafe(close)
            except RuntimeError:
                pass
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one connection -------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = str(peername[0])
        buffer = bytearray()
        try:
            while True:
                message = await self._next_message(reader, buffer, writer, peer)
                if message is None:
                    break
                answer = await asyncio.get_running_loop().run_in_executor(self.pool, self._handle, message, peer)
                writer.write(frame(answer))
                await writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("MLLP connection from %s ended: %s", peer, exc)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (Exception, asyncio.CancelledError):
                pass

    async def _next_message(self, reader: asyncio.StreamReader, buffer: bytearray, writer: asyncio.StreamWriter,
                            peer: str) -> bytes | None:
        """The next framed message, or None when the connection should close (EOF, bad framing, too big)."""
        while True:
            start = buffer.find(START)
            if buffer and start != 0:
                # tolerate whitespace between frames; anything else is not MLLP
                junk = bytes(buffer[:start if start > 0 else len(buffer)])
                if junk.strip(b"\r\n \t"):
                    log.warning("MLLP connection from %s sent %d bytes outside a frame; closing it", peer, len(junk))
                    return None
                del buffer[:len(junk)]
                continue
            end = buffer.find(END)
            if start == 0 and end > 0:
                message = bytes(buffer[1:end])
                del buffer[:end + len(END)]
                return message
            if len(buffer) > self.max_bytes + 3:
                log.warning("MLLP message from %s exceeds %d bytes; refused", peer, self.max_bytes)
                answer = ack(_header_of(bytes(buffer[1:4096])), "AR",
                             f"message exceeds the limit of {self.max_bytes} bytes", "207")
                writer.write(frame(answer))
                await writer.drain()
                await self._discard_rest(reader, buffer)
                return None
            chunk = await asyncio.wait_for(reader.read(256 * 1024), self.idle_timeout)
            if not chunk:
                if buffer.strip(b"\r\n \t"):
                    log.warning("MLLP connection from %s closed in the middle of a message", peer)
                return None
            buffer.extend(chunk)

    async def _discard_rest(self, reader: asyncio.StreamReader, buffer: bytearray) -> None:
        """Read and drop the rest of a refused message (up to 64 times the limit), so the sender, still
        writing, can read the AR instead of seeing its connection reset."""
        tail = bytes(buffer[-1:])
        buffer.clear()
        budget = 64 * self.max_bytes
        while budget > 0:
            chunk = await asyncio.wait_for(reader.read(1024 * 1024), self.idle_timeout)
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
