"""multipart/related (RFC 2387) as DICOMweb uses it: answers streamed part by part, requests split into
their parts, and the Accept header read into (media type, transfer syntax) choices."""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from imex.web.errors import Problem


@dataclass(frozen=True)
class Choice:
    """One acceptable answer: multipart or not, the (part) media type, the transfer syntax asked for."""

    multipart: bool
    media_type: str
    transfer_syntax: str | None  # None: not said; "*": as stored
    quality: float = 1.0


_PARAM = re.compile(r';\s*([A-Za-z0-9_.\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')


def _params(text: str) -> dict[str, str]:
    return {k.lower(): v.strip().strip('"') for k, v in _PARAM.findall(text)}


def _split_accept(header: str) -> list[str]:
    """Comma-separated media ranges, commas inside quoted parameters kept."""
    out, depth, current = [], False, []
    for ch in header:
        if ch == '"':
            depth = not depth
        if ch == "," and not depth:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [x.strip() for x in out if x.strip()]


def accepted(header: str | None, default: Choice) -> list[Choice]:
    """The caller's choices, best first; `default` when the header is absent or accepts anything."""
    if not header or not header.strip():
        return [default]
    choices = []
    for item in _split_accept(header):
        base = item.split(";", 1)[0].strip().lower()
        params = _params(item)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if base in ("*/*", "multipart/*", "multipart/related") and "type" not in params:
            choices.append(Choice(default.multipart, default.media_type, params.get("transfer-syntax",
                                                                                     default.transfer_syntax), q))
        elif base == "multipart/related":
            choices.append(Choice(True, params["type"].lower(), params.get("transfer-syntax"), q))
        else:
            choices.append(Choice(False, base, params.get("transfer-syntax"), q))
    return sorted(choices, key=lambda c: -c.quality)


def boundary() -> str:
    return "imex-" + secrets.token_hex(16)


def content_type(part_type: str, bound: str, transfer_syntax: str | None = None) -> str:
    syntax = f'; transfer-syntax={transfer_syntax}' if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"{syntax}; boundary={bound}'


def stream(parts: Iterable[tuple[str, bytes]], bound: str) -> Iterator[bytes]:
    """(part content type, body) pairs as a multipart/related body."""
    for part_type, body in parts:
        yield f"--{bound}\r\nContent-Type: {part_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        yield body
        yield b"\r\n"
    yield f"--{bound}--\r\n".encode()


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse(content_type_header: str, body: bytes) -> tuple[str, list[Part]]:
    """(the request's type parameter, its parts); Problem 400/415 when it is not multipart/related."""
    base = content_type_header.split(";", 1)[0].strip().lower()
    if base != "multipart/related":
        raise Problem(415, "STOW-RS takes multipart/related; type=\"application/dicom\"")
    params = _params(content_type_header)
    bound = params.get("boundary")
    if not bound:
        raise Problem(400, "the multipart/related request has no boundary")
    chunks = (b"\r\n" + body).split(b"\r\n--" + bound.encode("latin-1"))
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        _padding, _, chunk = chunk.partition(b"\r\n")
        if chunk.startswith(b"\r\n"):
            head, content = b"", chunk[2:]
        else:
            head, sep, content = chunk.partition(b"\r\n\r\n")
            if not sep:
                raise Problem(400, "a part of the multipart/related request has no header block")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
    if not parts:
        raise Problem(400, "the multipart/related request has no parts")
    return params.get("type", "").lower(), parts
