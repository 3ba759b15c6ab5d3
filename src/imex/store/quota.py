"""Bytes and studies held per institution and per folder, and the check made before an arriving instance
is written: over its institution's quota, or with the disk nearly full, the sender gets 0xA700 (out of
resources) and nothing is stored.

Totals come from the database at most every few seconds (several processes share it) plus what this
process stored since, so the check costs no query per instance."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, func, select

from imex import events
from imex.db import Database
from imex.db.models import folder_studies, folders, instances, institutions, studies

log = logging.getLogger("imex.storage")


@dataclass(frozen=True)
class Held:
    bytes: int
    studies: int
    quota_bytes: int | None = None


def by_institution(conn: Connection, institution_id: int | None = None) -> dict[int, Held]:
    query = (
        select(
            institutions.c.id,
            institutions.c.quota_bytes,
            func.coalesce(func.sum(instances.c.size), 0),
            func.count(func.distinct(studies.c.id)),
        )
        .select_from(institutions)
        .outerjoin(studies, studies.c.institution_id == institutions.c.id)
        .outerjoin(instances, instances.c.study_id == studies.c.id)
        .group_by(institutions.c.id, institutions.c.quota_bytes)
    )
    if institution_id is not None:
        query = query.where(institutions.c.id == institution_id)
    return {row[0]: Held(int(row[2]), int(row[3]), row[1]) for row in conn.execute(query)}


def by_folder(conn: Connection, folder_ids: list[int] | None = None) -> dict[int, Held]:
    per_study = (
        select(instances.c.study_id, func.sum(instances.c.size).label("size")).group_by(instances.c.study_id).subquery()
    )
    query = (
        select(
            folders.c.id,
            func.coalesce(func.sum(per_study.c.size), 0),
            func.count(func.distinct(folder_studies.c.study_id)),
        )
        .select_from(folders)
        .outerjoin(folder_studies, folder_studies.c.folder_id == folders.c.id)
        .outerjoin(per_study, per_study.c.study_id == folder_studies.c.study_id)
        .group_by(folders.c.id)
    )
    if folder_ids is not None:
        query = query.where(folders.c.id.in_(folder_ids))
    return {row[0]: Held(int(row[1]), int(row[2])) for row in conn.execute(query)}


class Quota:
    """Decides, before an instance is written, whether there is room for it."""

    def __init__(self, db: Database, store_root: Path, min_free_bytes: int, refresh_seconds: float = 5.0) -> None:
        self.db = db
        self.store_root = store_root
        self.min_free_bytes = min_free_bytes
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._held: dict[int, Held] = {}
        self._added: dict[int, int] = {}
        self._loaded = 0.0
        self._alerted: dict[int, float] = {}

    def _totals(self) -> dict[int, Held]:
        if time.monotonic() - self._loaded > self.refresh_seconds:
            with self.db.reader() as conn:
                held = by_institution(conn)
                conn.rollback()
            with self._lock:
                self._held, self._added, self._loaded = held, {}, time.monotonic()
        return self._held

    def refusal(self, institution_id: int, size: int) -> str | None:
        """Why an instance of `size` bytes from this institution cannot be stored now; None when it can."""
        if self.min_free_bytes > 0:
            free = shutil.disk_usage(self.store_root).free
            if free - size < self.min_free_bytes:
                log.error("refusing instances: %d bytes free on the store, below store.min_free_bytes", free)
                return "the hub's storage is nearly full; retry later"
        held = self._totals().get(institution_id)
        if held is None or held.quota_bytes is None:
            return None
        used = held.bytes + self._added.get(institution_id, 0)
        if used + size > held.quota_bytes:
            log.warning(
                "institution %s is over its storage quota (%d + %d > %d bytes)",
                institution_id,
                used,
                size,
                held.quota_bytes,
            )
            self._alert(institution_id, used, held.quota_bytes)
            return (
                f"the sending institution has used its storage quota on the hub ({used} of "
                f"{held.quota_bytes} bytes); ask the hub's administrators"
            )
        return None

    def _alert(self, institution_id: int, used: int, quota: int) -> None:
        """Tell the institution's contact, at most once an hour, that its studies are being refused."""
        now = time.monotonic()
        if now - self._alerted.get(institution_id, -3600.0) < 3600.0:
            return
        self._alerted[institution_id] = now
        try:
            with self.db.engine.begin() as conn:
                events.emit("quota.reached", conn, institution_id=institution_id, used=used, quota=quota)
        except Exception:
            log.exception("could not queue the quota alert for institution %s", institution_id)

    def stored(self, institution_id: int, size: int) -> None:
        with self._lock:
            self._added[institution_id] = self._added.get(institution_id, 0) + size

    def invalidate(self) -> None:
        self._loaded = 0.0
