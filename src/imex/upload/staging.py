"""Staging an upload: its row and folder, files arriving in chunks (so a 2 GB CD is many requests and the
progress bar is real), the limits on staged bytes (per file, per upload, per user, per institution),
unpacking zips safely, and deleting what is discarded or expired.

Files are staged under names the hub chooses (`<file id>` or `z<zip id>-<entry>`), never under a name the
browser or a zip gave, so nothing can be written outside the upload's folder. Files are classified as
they complete, outside any database transaction (on SQLite a long one would hold up DICOM arrivals).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import Upload, UploadFile, upload_files
from imex.upload import zipsafe
from imex.upload.classify import Found, classify
from imex.upload.paths import UnsafeName, clean

log = logging.getLogger("imex.upload")
OPEN = "open"


class UploadError(Exception):
    """A refusal with the HTTP status to answer and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Chunk:
    """Where a chunk of a file goes: the staged file, its offset, and the most bytes it may bring."""

    file_id: int
    target: Path
    offset: int
    room: int


def staging_root(config: Config) -> Path:
    raw = config["upload.staging_dir"]
    return Path(raw).expanduser().absolute() if raw else config.data_dir / "uploads"


class Staging:
    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config
        self.root = staging_root(config)

    def folder(self, upload_id: int) -> Path:
        return self.root / str(int(upload_id))

    # -- creating and receiving ------------------------------------------------------------------------

    def create(self, user_id: int, username: str, institution_id: int) -> Upload:
        now = utcnow()
        with self.db.session() as s:
            upload = Upload(
                user_id=user_id,
                username=username,
                institution_id=institution_id,
                state=OPEN,
                staged_bytes=0,
                created_at=now,
                priority=0,
                message="",
                instances_stored=0,
                error="",
                expires_at=now + dt.timedelta(hours=self.config["upload.expiry_hours"]),
            )
            s.add(upload)
            s.flush()
            self.folder(upload.id).mkdir(parents=True, exist_ok=True)
            return upload

    def _room(self, s, upload: Upload) -> int:
        """Bytes this upload may still stage under every limit (upload, user, institution)."""

        def staged(*where) -> int:
            return int(
                s.scalar(
                    select(func.coalesce(func.sum(Upload.staged_bytes), 0)).where(
                        Upload.state.in_((OPEN, "sending")), *where
                    )
                )
                or 0
            )

        c = self.config
        return min(
            c["upload.max_staged_bytes"] - upload.staged_bytes,
            c["upload.max_user_bytes"] - staged(Upload.user_id == upload.user_id),
            c["upload.max_institution_bytes"] - staged(Upload.institution_id == upload.institution_id),
        )

    def begin_chunk(self, upload_id: int, raw_path: str, size: int, offset: int) -> Chunk:
        """Check a chunk before its bytes are read: the first chunk of a file reserves the file's whole
        declared size against the limits (so a file over them is refused before anything is written)."""
        try:
            path = clean(raw_path, self.config["upload.zip_max_depth"])
        except UnsafeName as exc:
            raise UploadError(422, str(exc)) from None
        if size < 0 or offset < 0 or offset > size:
            raise UploadError(422, "size and offset must be positive, the offset within the size")
        if size > self.config["upload.max_file_bytes"]:
            raise UploadError(
                413,
                f"{path} is {size} bytes; files up to {self.config['upload.max_file_bytes']} "
                "bytes are accepted (upload.max_file_bytes)",
            )
        with self.db.session() as s:
            upload = s.get(Upload, upload_id)
            assert upload is not None
            if upload.state != OPEN:
                raise UploadError(409, f"this upload is {upload.state}; files can no longer be added")
            row = s.scalar(select(UploadFile).where(UploadFile.upload_id == upload_id, UploadFile.path == path))
            if row is None:
                if offset != 0:
                    raise UploadError(409, f"{path} has not been started; send it from offset 0")
                count = s.scalar(select(func.count()).select_from(UploadFile).where(UploadFile.upload_id == upload_id))
                if count >= self.config["upload.max_files"]:
                    raise UploadError(
                        413, f"an upload holds at most {self.config['upload.max_files']} files (upload.max_files)"
                    )
                if size > self._room(s, upload):
                    raise UploadError(413, self._over(size))
                row = UploadFile(
                    upload_id=upload_id,
                    path=path,
                    size=size,
                    received=0,
                    kind="",
                    reason="",
                    study_uid="",
                    sop_uid="",
                    info="",
                    stored=False,
                    staged_name="",
                )
                s.add(row)
                try:
                    s.flush()
                except IntegrityError:
                    raise UploadError(409, f"{path} is already being uploaded") from None
                row.staged_name = str(row.id)
                upload.staged_bytes += size
                (self.folder(upload_id) / row.staged_name).touch()
            elif row.size != size:
                raise UploadError(409, f"{path} was started with size {row.size}, not {size}")
            elif row.received == row.size and size > 0 or row.kind:
                raise UploadError(409, f"{path} has already arrived")
            elif offset != row.received:
                raise UploadError(409, f"{path}: {row.received} bytes have arrived; send from offset {row.received}")
            return Chunk(row.id, self.folder(upload_id) / row.staged_name, offset, size - offset)

    def _over(self, size: int) -> str:
        c = self.config
        return (
            f"this file ({size} bytes) would take the bytes staged for sending past a limit: "
            f"{c['upload.max_staged_bytes']} per upload, {c['upload.max_user_bytes']} per user, "
            f"{c['upload.max_institution_bytes']} per institution (upload.max_*_bytes); send or discard "
            "other uploads first, or upload fewer files at once"
        )

    def end_chunk(self, upload_id: int, chunk: Chunk, written: int) -> dict:
        """Record the bytes written; a file that is complete is classified (a zip unpacked)."""
        with self.db.session() as s:
            moved = cast(
                CursorResult[Any],
                s.execute(
                    update(UploadFile)
                    .where(UploadFile.id == chunk.file_id, UploadFile.received == chunk.offset)
                    .values(received=chunk.offset + written)
                ),
            ).rowcount
            if moved != 1:
                raise UploadError(409, "another request wrote to this file at the same time; resend from its offset")
            row = s.get(UploadFile, chunk.file_id)
            assert row is not None
            complete = row.received == row.size
        problem = ""
        if complete:
            problem = self._complete(upload_id, chunk.file_id)
        with self.db.reader() as conn:
            row = conn.execute(
                select(UploadFile.path, UploadFile.size, UploadFile.received, UploadFile.kind, UploadFile.reason).where(
                    UploadFile.id == chunk.file_id
                )
            ).one()
        if problem:
            raise UploadError(422, problem)
        return {
            "path": row.path,
            "size": row.size,
            "received": row.received,
            "complete": complete,
            "kind": row.kind,
            "reason": row.reason,
        }

    def discard_chunk(self, chunk: Chunk) -> None:
        """A chunk that failed half way: cut the file back to where it was."""
        try:
            with open(chunk.target, "r+b") as fh:
                fh.truncate(chunk.offset)
        except FileNotFoundError:
            pass

    # -- classifying -----------------------------------------------------------------------------------

    def _complete(self, upload_id: int, file_id: int) -> str:
        """Classify a complete file; for a zip, unpack it. Returns a refusal message, or ''."""
        with self.db.reader() as conn:
            row = conn.execute(select(upload_files).where(UploadFile.id == file_id)).one()
        staged = self.folder(upload_id) / row.staged_name
        found = classify(staged, row.path)
        if found.kind != "zip":
            self._set(file_id, found)
            return ""
        try:
            self._unpack(upload_id, row.id, row.path, staged)
        except zipsafe.ZipRefused as exc:
            self._set(file_id, Found("skipped", f"zip refused: {exc}"[:300]))
            self._forget_bytes(upload_id, file_id, staged)
            return str(exc)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, NotImplementedError) as exc:
            self._set(file_id, Found("skipped", f"zip cannot be read: {exc}"[:300]))
            self._forget_bytes(upload_id, file_id, staged)
            return f"the zip {row.path} cannot be read: {exc}"
        return ""

    def _set(self, file_id: int, found: Found) -> None:
        with self.db.session() as s:
            s.execute(
                update(UploadFile)
                .where(UploadFile.id == file_id)
                .values(
                    kind=found.kind,
                    reason=found.reason[:300],
                    study_uid=found.study_uid[:64],
                    sop_uid=found.sop_uid[:64],
                    info=found.info_json(),
                )
            )

    def _forget_bytes(self, upload_id: int, file_id: int, staged: Path) -> None:
        """A file whose bytes are no longer needed (a refused or unpacked zip): delete it, release its bytes."""
        staged.unlink(missing_ok=True)
        with self.db.session() as s:
            size = s.scalar(select(UploadFile.size).where(UploadFile.id == file_id)) or 0
            s.execute(
                update(Upload)
                .where(Upload.id == upload_id)
                .values(
                    staged_bytes=func.max(Upload.staged_bytes - size, 0)
                    if self.db.is_sqlite
                    else func.greatest(Upload.staged_bytes - size, 0)
                )
            )

    def _unpack(self, upload_id: int, zip_id: int, zip_path: str, staged: Path) -> None:
        c = self.config
        with self.db.reader() as conn:
            files = conn.execute(
                select(func.count()).select_from(UploadFile).where(UploadFile.upload_id == upload_id)
            ).scalar_one()
            taken = set(conn.execute(select(UploadFile.path).where(UploadFile.upload_id == upload_id)).scalars())
        with self.db.sessions() as s:
            zip_size = s.scalar(select(UploadFile.size).where(UploadFile.id == zip_id)) or 0
            room = self._room(s, s.get_one(Upload, upload_id)) + zip_size  # the zip itself goes once unpacked
        limits = zipsafe.Limits(
            max_entries=max(c["upload.max_files"] - files, 0),
            max_total_bytes=max(room, 0),
            max_ratio=c["upload.zip_max_ratio"],
            max_depth=c["upload.zip_max_depth"],
        )
        folder = self.folder(upload_id)
        made: list[Path] = []
        rows: list[dict] = []
        spent = 0

        def budget(n: int) -> None:
            nonlocal spent
            spent += n
            if spent > limits.max_total_bytes:
                raise zipsafe.ZipRefused(f"the zip expands to more than {limits.max_total_bytes} bytes")

        try:
            with zipfile.ZipFile(staged) as archive:
                entries = zipsafe.check(archive, limits)
                for index, entry in enumerate(entries):
                    name = f"z{zip_id}-{index}"
                    target = folder / name
                    made.append(target)
                    size = zipsafe.extract(archive, entry, target, budget)
                    path = _unique(f"{zip_path}/{entry.name}"[:1000], taken)
                    found = classify(target, entry.name)
                    if found.kind == "zip":
                        found = Found("skipped", "a zip inside a zip is not opened; unpack it and upload its files")
                    rows.append(
                        dict(
                            upload_id=upload_id,
                            path=path,
                            staged_name=name,
                            size=size,
                            received=size,
                            kind=found.kind,
                            reason=found.reason[:300],
                            study_uid=found.study_uid[:64],
                            sop_uid=found.sop_uid[:64],
                            info=found.info_json(),
                            stored=False,
                            created_at=utcnow(),
                        )
                    )
        except BaseException:
            for target in made:
                target.unlink(missing_ok=True)
            raise
        with self.db.session() as s:
            if rows:
                s.execute(insert(upload_files), rows)
            s.execute(
                update(UploadFile)
                .where(UploadFile.id == zip_id)
                .values(kind="zip", reason=f"unpacked: {len(rows)} file(s)")
            )
            s.execute(update(Upload).where(Upload.id == upload_id).values(staged_bytes=Upload.staged_bytes + spent))
        self._forget_bytes(upload_id, zip_id, staged)
        log.info("upload %s: zip %s unpacked, %d files, %d bytes", upload_id, zip_path, len(rows), spent)

    # -- ending ----------------------------------------------------------------------------------------

    def remove_files(self, upload_id: int) -> None:
        """Delete the staging folder and release its bytes (the rows stay, for the record)."""
        shutil.rmtree(self.folder(upload_id), ignore_errors=True)
        with self.db.session() as s:
            s.execute(update(Upload).where(Upload.id == upload_id).values(staged_bytes=0))

    def discard(self, upload_id: int) -> bool:
        """Discard an open (or failed) upload; False when it is being sent or already ended."""
        with self.db.session() as s:
            changed = cast(
                CursorResult[Any],
                s.execute(
                    update(Upload)
                    .where(Upload.id == upload_id, Upload.state.in_((OPEN, "failed")))
                    .values(state="discarded")
                ),
            ).rowcount
        if changed:
            self.remove_files(upload_id)
        return bool(changed)

    def expire(self, now: dt.datetime | None = None) -> list[int]:
        """Uploads past their expiry: unsent ones end `expired`; every one loses its staged files and its
        file rows (they name patients); the upload row stays, as the audit trail does. Returns ids."""
        now = now or utcnow()
        has_rows = exists().where(UploadFile.upload_id == Upload.id)
        with self.db.reader() as conn:
            due = conn.execute(
                select(Upload.id, Upload.state).where(
                    Upload.expires_at <= now,
                    Upload.state != "sending",
                    (Upload.staged_bytes > 0) | Upload.state.in_((OPEN, "failed")) | has_rows,
                )
            ).all()
        for upload_id, state in due:
            with self.db.session() as s:
                if state in (OPEN, "failed"):
                    s.execute(
                        update(Upload).where(Upload.id == upload_id, Upload.state == state).values(state="expired")
                    )
            self.remove_files(upload_id)
            with self.db.session() as s:
                s.execute(delete(UploadFile).where(UploadFile.upload_id == upload_id))
        return [row[0] for row in due]

    def incomplete(self, upload_id: int) -> list[str]:
        with self.db.reader() as conn:
            return list(
                conn.execute(
                    select(UploadFile.path).where(UploadFile.upload_id == upload_id, UploadFile.kind == "")
                ).scalars()
            )


def _unique(path: str, taken: set[str]) -> str:
    """A zip may hold the same name twice; the second becomes 'name (2)'."""
    candidate, n = path, 1
    while candidate in taken:
        n += 1
        candidate = f"{path} ({n})"
    taken.add(candidate)
    return candidate
