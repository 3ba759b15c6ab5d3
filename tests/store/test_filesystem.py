"""The blob store: content addressing, atomic writes, leftovers from a crash."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from imex.store import BlobStore


def test_put_is_content_addressed_and_deduplicated(tmp_path):
    store = BlobStore(tmp_path, fsync=True)
    key, size = store.put((b"DICM", b"-payload"))
    assert key == hashlib.sha256(b"DICM-payload").hexdigest() and size == 12
    assert store.read(key) == b"DICM-payload"
    assert store.put_bytes(b"DICM-payload") == (key, 12)
    blobs = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != store.tmp]
    assert blobs == [store.path(key)]


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = BlobStore(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", broken_fsync)
    with pytest.raises(OSError):
        store.put_bytes(b"x" * 1000)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_only_old_temporary_files_are_cleaned(tmp_path):
    store = BlobStore(tmp_path)
    old = store.tmp / "in-old"
    young = store.tmp / "in-young"
    old.write_bytes(b"half a file")
    young.write_bytes(b"being written by another process")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert store.clean_temporary() == 1
    assert not old.exists() and young.exists()
