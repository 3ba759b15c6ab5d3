"""multipart/related (RFC 2387) as DICOMweb uses it: answers streamed part by part, requests split into
their parts as they arrive (each written to a file, never held in memory), and the Accept header read
into (media type, transfer syntax) choices."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

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
    out: list[str] = []
    current: list[str] = []
    depth = False
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
            choices.append(
                Choice(default.multipart, default.media_type, params.get("transfer-syntax", default.transfer_syntax), q)
            )
        elif base == "multipart/related":
            choices.append(Choice(True, params["type"].lower(), params.get("transfer-syntax"), q))
        else:
            choices.append(Choice(False, base, params.get("transfer-syntax"), q))
    return sorted(choices, key=lambda c: -c.quality)


def boundary() -> str:
    return "imex-" + secrets.token_hex(16)


def content_type(part_type: str, bound: str, transfer_syntax: str | None = None) -> str:
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"{syntax}; boundary={bound}'


def stream(parts: Iterable[tuple[str, bytes]], bound: str) -> Iterator[bytes]:
    """(part content type, body) pairs as a multipart/related body."""
    for part_type, body in parts:
        yield f"--{bound}\r\nContent-Type: {part_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        yield body
        yield b"\r\n"
    yield f"--{bound}--\r\n".encode()


@dataclass(frozen=True)
class SpooledPart:
    """One part of a request, written whole to `path` (the caller removes the file)."""

    headers: dict[str, str]
    path: str
    size: int

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def related(content_type_header: str) -> tuple[str, str]:
    """(the request's type parameter, its boundary); Problem 400/415 when it is not multipart/related."""
    base = content_type_header.split(";", 1)[0].strip().lower()
    if base != "multipart/related":
        raise Problem(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    params = _params(content_type_header)
    bound = params.get("boundary")
    if not bound:
        raise Problem(400, "the multipart/related request has no boundary")
    if len(bound) > 70:  # RFC 2046 5.1.1
        raise Problem(400, "the multipart/related boundary is longer than 70 characters")
    return params.get("type", "").lower(), bound


class PartSpooler:
    """Splits a multipart/related body as it arrives (python-multipart's streaming parser) and writes each
    part to its own file in `folder` (named `in-stow-*`, which the store's clean-up sweeps after a crash),
    so no part is ever held in memory. `write` returns the parts completed by a chunk; `finish` checks the
    body ended with its closing boundary; `close` removes the file of a part left unfinished."""

    MAX_HEADERS, MAX_HEADER_BYTES = 32, 8192  # per part

    def __init__(self, boundary: str, folder: str | os.PathLike[str]) -> None:
        self.folder = os.fspath(folder)
        self.parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._begin,
                "on_header_field": self._field,
                "on_header_value": self._value,
                "on_header_end": self._header_end,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_end": self._finished,
            },
            max_header_count=self.MAX_HEADERS,
            max_header_size=self.MAX_HEADER_BYTES,
        )
        self.done: list[SpooledPart] = []
        self.ended = False
        self.parts = 0
        self._fd: int | None = None
        self._path = ""
        self._size = 0
        self._headers: dict[str, str] = {}
        self._name = bytearray()
        self._text = bytearray()

    def _begin(self) -> None:
        self._headers, self._size = {}, 0
        self._path = os.path.join(self.folder, f"in-stow-{secrets.token_hex(12)}")
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._text += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._name.decode("latin-1").strip().lower()] = self._text.decode("latin-1").strip()
        self._name, self._text = bytearray(), bytearray()

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None
        view = memoryview(data)[start:end]
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += end - start

    def _end(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self.parts += 1
        self.done.append(SpooledPart(self._headers, self._path, self._size))
        self._path = ""

    def _finished(self) -> None:
        self.ended = True

    def write(self, chunk: bytes) -> list[SpooledPart]:
        """Parse the next piece of the body; the parts it completed (their files are the caller's)."""
        if chunk and not self.ended:
            try:
                self.parser.write(chunk)
            except MultipartParseError as exc:
                raise Problem(400, f"the multipart/related request is malformed: {exc}") from None
        done, self.done = self.done, []
        return done

    def finish(self) -> None:
        """After the last chunk: Problem 400 unless the body held parts and ended with its closing boundary."""
        if not self.ended:
            raise Problem(400, "the multipart/related request ended before its closing boundary")
        if not self.parts:
            raise Problem(400, "the multipart/related request has no parts")

    def close(self) -> None:
        """Remove the file of an unfinished part, and of completed parts nobody took."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for path in [self._path, *(p.path for p in self.done)]:
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self._path, self.done = "", []
