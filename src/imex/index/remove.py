"""Deleting a study from the hub: its index rows (transfers and their history go with them) and the blobs
no other instance shares. Rows go first, blobs after the commit, so a crash in between leaves only an
unreferenced file (which `orphans()` finds), never a row pointing at nothing. A tombstone says what was
deleted, when and why; the audit trail is never touched."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select

from imex import audit
from imex.db import Database, utcnow
from imex.db.models import instances, patients, studies, tombstones
from imex.store import BlobStore

log = logging.getLogger("imex.index")


@dataclass(frozen=True)
class Deleted:
    study_uid: str
    instances: int
    bytes: int


def delete_study(
    db: Database,
    store: BlobStore | None,
    study_id: int,
    *,
    reason: str = "",
    only_if: ColumnElement[bool] | None = None,
    actor: dict[str, Any] | None = None,
) -> Deleted | None:
    """Delete a study; None when it is not there, or `only_if` (a condition on the study, checked in the
    deleting transaction) no longer holds. With `actor`, the audit event is written in that transaction."""
    with db.engine.begin() as conn:
        query = select(studies).where(studies.c.id == study_id)
        if only_if is not None:
            query = query.where(only_if)
        study = conn.execute(query).first()
        if study is None:
            return None
        rows = conn.execute(
            select(instances.c.blob_key, instances.c.size).where(instances.c.study_id == study_id)
        ).all()
        keys = {r.blob_key for r in rows}
        size = sum(r.size for r in rows)
        patient = conn.execute(select(patients.c.patient_id).where(patients.c.id == study.patient_pk)).scalar()
        conn.execute(delete(studies).where(studies.c.id == study_id))
        shared = (
            set(conn.execute(select(instances.c.blob_key).where(instances.c.blob_key.in_(keys))).scalars().all())
            if keys
            else set()
        )
        if not conn.execute(
            select(func.count()).select_from(studies).where(studies.c.patient_pk == study.patient_pk)
        ).scalar_one():
            conn.execute(delete(patients).where(patients.c.id == study.patient_pk))
        conn.execute(
            insert(tombstones).values(
                study_uid=study.study_uid,
                institution_id=study.institution_id,
                patient_id=patient or "",
                accession_number=study.accession_number,
                study_date=study.study_date,
                modalities=study.modalities,
                instances=len(rows),
                bytes=size,
                first_received_at=study.first_received_at,
                expired_at=study.expires_at,
                deleted_at=utcnow(),
                reason=reason[:2000],
            )
        )
        if actor is not None:
            audit.record(
                conn,
                "study.delete",
                study_uid=study.study_uid,
                patient_id=patient or "",
                object_type="study",
                object_id=study_id,
                detail=f"{len(rows)} instance(s), {size} bytes: {reason}"[:4000],
                **actor,
            )
    if store is not None:
        for key in keys - shared:
            try:
                store.delete(key)
            except OSError:
                log.warning("could not delete blob %s; it is no longer referenced", key)
    return Deleted(study.study_uid, len(rows), size)


def orphans(db: Database, store: BlobStore, older_than: dt.timedelta = dt.timedelta(hours=1)) -> Iterator[str]:
    """Blob keys in the store that no instance refers to (left by a crash between a deletion's commit and
    its file removal), skipping files younger than `older_than` (an arrival may not be indexed yet)."""
    import time

    cutoff = time.time() - older_than.total_seconds()
    for path in store.root.glob("???/*"):
        if not path.is_file() or path.stat().st_mtime > cutoff:
            continue
        with db.reader() as conn:
            known = conn.execute(select(instances.c.id).where(instances.c.blob_key == path.name).limit(1)).first()
        if known is None:
            yield path.name
