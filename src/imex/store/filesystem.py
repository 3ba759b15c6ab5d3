"""Content-addressed blob store on the local filesystem.

A blob is written to a temporary file in the store, optionally fsync'd, then renamed into place, so a
crash at any moment leaves either the whole file or none: the index never points at half a file.
Identical content is stored once.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._folders: set[str] = set()  # fan-out folders known to exist, to skip a mkdir per blob
        if not (self.root / "fff").is_dir():  # made once, so no blob write pays for a mkdir
            for n in range(4096):
                (self.root / f"{n:03x}").mkdir(exist_ok=True)
        self._folders.update(str(self.root / f"{n:03x}") for n in range(4096))

    def path(self, key: str) -> Path:
        """Where the blob with this SHA-256 hex key lives: one of 4096 folders by its first 3 hex digits
        (10 million instances make about 2,500 files a folder)."""
        return self.root / key[:3] / key

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put(self, chunks: list[bytes] | tuple[bytes, ...]) -> tuple[str, int]:
        """Store the concatenation of `chunks`; returns (key, size). Chunks avoid joining big buffers."""
        digest = hashlib.sha256()
        size = 0
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
        key = digest.hexdigest()
        final = self.path(key)
        if final.exists():
            return key, size
        tmp_name = os.path.join(self.tmp, f"in-{secrets.token_hex(12)}")
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            folder = str(final.parent)
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            try:
                os.replace(tmp_name, final)
            except FileNotFoundError:  # its folder was removed (e.g. by retention) since we saw it
                os.makedirs(folder, exist_ok=True)
                os.replace(tmp_name, final)
            if self.fsync:
                self._fsync_dir(final.parent)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        return key, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put((data,))

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def clean_temporary(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by a crash mid-write (never indexed); returns how many. Only old ones:
        another process sharing the store may be writing the young ones right now."""
        removed = 0
        cutoff = time.time() - older_than
        for leftover in self.tmp.glob("in-*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
