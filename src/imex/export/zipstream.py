"""Stream a study as a zip (DICOMDIR plus the stored instances, stored, not deflated: images do not
compress and the bytes must stay exactly as received) without holding it in memory: entries are written
through zipfile in its streaming mode (data descriptors) and handed out chunk by chunk."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.db.models import Instance, Series
from imex.export.dicomdir import Member, build_dicomdir
from imex.store.filesystem import BlobStore

CHUNK = 1024 * 1024


def study_members(s: Session, store: BlobStore, study_id: int) -> list[Member]:
    """The study's instances in series and instance order, with the paths of their blobs."""
    rows = s.execute(
        select(Instance.sop_uid, Instance.blob_key)
        .join(Series, Series.id == Instance.series_id)
        .where(Instance.study_id == study_id)
        .order_by(Series.number, Series.id, Instance.number, Instance.id)
    ).all()
    return [Member(sop_uid, store.path(key)) for sop_uid, key in rows]


class _Pipe:
    """A write-only, unseekable file whose writes are collected for the generator to yield."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        if data:
            self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Nothing to close (ZipFile never closes a file it was given; a writable file has this method)."""

    def take(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


def stream_zip(members: list[Member], plan: tuple[bytes, dict[str, str]] | None = None) -> Iterator[bytes]:
    """The zip's bytes, piece by piece: DICOMDIR first, then every instance under its File ID. `plan` is
    build_dicomdir(members), made beforehand so that a failure answers an error, not a broken download."""
    dicomdir, file_ids = plan or build_dicomdir(members)
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(zipfile.ZipInfo("DICOMDIR", date_time=(1980, 1, 1, 0, 0, 0)), dicomdir)
        yield from pipe.take()
        for member in members:
            info = zipfile.ZipInfo(file_ids[member.sop_uid], date_time=(1980, 1, 1, 0, 0, 0))
            with open(member.path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    yield from pipe.take()
            yield from pipe.take()
    yield from pipe.take()


def write_folder(members: list[Member], folder: Path) -> int:
    """Write the file-set into `folder` (DICOMDIR at its root); returns the number of instances."""
    dicomdir, file_ids = build_dicomdir(members)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "DICOMDIR").write_bytes(dicomdir)
    for member in members:
        target = folder.joinpath(*file_ids[member.sop_uid].split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(member.path, target)
    return len(members)


def write_zip(members: list[Member], target: Path) -> int:
    """Write the zip to `target`; returns the number of instances."""
    with open(target, "wb") as out:
        for chunk in stream_zip(members):
            out.write(chunk)
    return len(members)
