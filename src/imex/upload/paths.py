"""Names that come from outside (a browser's relative path, a zip entry's name) are only ever text: the
hub stages files under names it chooses. They are still checked, so a hostile name is refused with a
clear message rather than shown or matched against a DICOMDIR."""

from __future__ import annotations

import re

_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_PATH = 1024


class UnsafeName(ValueError):
    """A file or entry name the hub refuses; the message says which and why."""


def clean(name: str, max_depth: int = 64) -> str:
    """The name as a relative path with '/' separators; UnsafeName for absolute paths, drive letters,
    '..', control characters, or too many folder levels."""
    if not name or len(name) > MAX_PATH:
        raise UnsafeName(f"the name {name[:80]!r} is empty or longer than {MAX_PATH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafeName(f"the name {name[:80]!r} contains control characters")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise UnsafeName(f"the name {name[:80]!r} is an absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeName(f"the name {name[:80]!r} climbs out of its folder ('..')")
    if not parts:
        raise UnsafeName(f"the name {name[:80]!r} names no file")
    if len(parts) > max_depth:
        raise UnsafeName(f"the name {name[:80]!r} is nested more than {max_depth} folders deep")
    return "/".join(parts)
