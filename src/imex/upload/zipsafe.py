"""Unpacking a zip someone uploaded, refusing the dangerous ones before a byte is extracted: names that
leave the folder (.., absolute, drive letters), symbolic links, too deep, too many entries, more bytes in
total than the upload may still stage, and entries whose claimed expansion is a zip bomb's. Extraction is
then streamed with a cap per entry, since the sizes a zip declares may lie."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imex.upload.paths import UnsafeName, clean

RATIO_FLOOR = 1 << 20  # entries smaller than this are not judged by their compression ratio
CHUNK = 1 << 20


class ZipRefused(ValueError):
    """The zip is refused as a whole; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_total_bytes: int
    max_ratio: int
    max_depth: int


@dataclass(frozen=True)
class Entry:
    info: zipfile.ZipInfo
    name: str  # cleaned


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def check(archive: zipfile.ZipFile, limits: Limits) -> list[Entry]:
    """The zip's files (directories left out), or ZipRefused before anything is extracted."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise ZipRefused(f"the zip has {len(infos)} entries; at most {limits.max_entries} are accepted")
    entries: list[Entry] = []
    total = 0
    for info in infos:
        try:
            name = clean(info.filename, limits.max_depth)
        except UnsafeName as exc:
            raise ZipRefused(f"unsafe entry in the zip: {exc}") from None
        if _is_symlink(info):
            raise ZipRefused(f"the zip entry {name!r} is a symbolic link; links are refused")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise ZipRefused(f"the zip entry {name!r} is encrypted; upload the files unencrypted")
        if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ZipRefused(
                f"the zip entry {name!r} claims to expand {info.file_size // max(info.compress_size, 1)} "
                f"times (at most {limits.max_ratio}): refused as a zip bomb"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ZipRefused(
                f"the zip expands to more than {limits.max_total_bytes} bytes, more than this upload may still stage"
            )
        entries.append(Entry(info, name))
    return entries


def extract(archive: zipfile.ZipFile, entry: Entry, target: Path, budget: Callable[[int], None]) -> int:
    """Stream one entry into `target` (a new file), writing no more than it declared; `budget(n)` is told
    each chunk and may raise to stop. Returns the bytes written."""
    written = 0
    limit = entry.info.file_size
    with archive.open(entry.info) as source, open(target, "xb") as out:
        for chunk in _chunks(source):
            written += len(chunk)
            if written > limit:
                raise ZipRefused(f"the zip entry {entry.name!r} expands past the size it declares ({limit} bytes)")
            budget(len(chunk))
            out.write(chunk)
    return written


def _chunks(source) -> Iterator[bytes]:
    while True:
        try:
            chunk = source.read(CHUNK)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # corrupt data, bad CRC
            raise ZipRefused(f"the zip is damaged: {exc}") from None
        if not chunk:
            return
        yield chunk
