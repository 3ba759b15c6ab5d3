"""Sending one HL7 message over MLLP and reading its ACK: used to forward reports to a RIS, to query a RIS
for a report, and by `imex hl7 send`."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from imex.hl7.mllp import END, START, frame
from imex.tls import profile


class MllpError(ConnectionError):
    """The peer could not be reached, closed the connection, or answered with something that is not MLLP."""


@dataclass(frozen=True)
class Answer:
    raw: bytes
    code: str  # MSA-1: AA, AE, AR (or CA/CE/CR); "" when there is no MSA
    text: str  # MSA-3 and ERR, for the operator

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


def read_answer(raw: bytes) -> Answer:
    code, text = "", []
    for segment in raw.replace(b"\n", b"\r").split(b"\r"):
        fields = segment.decode("utf-8", errors="replace").split("|")
        if fields[0] == "MSA":
            code = fields[1] if len(fields) > 1 else ""
            if len(fields) > 3 and fields[3]:
                text.append(fields[3])
        elif fields[0] == "ERR" and len(fields) > 1:
            text.append("|".join(f for f in fields[1:] if f))
    return Answer(raw, code.strip(), "; ".join(text))


def send(
    host: str, port: int, message: bytes, *, timeout: float = 30.0, tls: bool = False, ca_file: str = ""
) -> Answer:
    """Send `message` (unframed, segments ending in CR) and return the peer's answer."""
    message = message.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise MllpError(f"cannot connect to {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            context = profile.client_context(ca_file or None)  # TLS 1.2+, BCP 195 ciphers, name checked
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.sendall(frame(message))
        data = bytearray()
        while END not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise MllpError(f"{host}:{port} closed the connection without an answer")
            data.extend(chunk)
            if len(data) > 16 * 1024 * 1024:
                raise MllpError(f"{host}:{port} sent an answer larger than 16 MB")
    except (OSError, ssl.SSLError) as exc:
        if isinstance(exc, MllpError):
            raise
        raise MllpError(f"{host}:{port}: {exc}") from None
    finally:
        sock.close()
    start = data.find(START)
    if start < 0:
        raise MllpError(f"{host}:{port} answered without MLLP framing")
    return read_answer(bytes(data[start + 1 : data.find(END)]))
