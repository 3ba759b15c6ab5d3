"""Deleting a study from the hub: its index rows (transfers and their history go with them) and the blobs
no other instance shares. Rows go first, blobs after the commit, so a crash in between leaves only an
unreferenced file, never a row pointing at nothing."""
from __future__ import annotations

import logging

from sqlalchemy import delete, func, select

from imex.db import Database
from imex.db.tables import instances, patients, studies
from imex.store import BlobStore

log = logging.getLogger("imex.index")


def delete_study(db: Database, store: BlobStore | None, study_id: int) -> int:
    """Delete a study; returns how many instances it had."""
    with db.engine.begin() as conn:
        row = conn.execute(select(studies.c.patient_pk).where(studies.c.id == study_id)).first()
        if row is None:
            return 0
        keys = conn.execute(select(instances.c.blob_key).where(instances.c.study_id == study_id)).scalars().all()
        conn.execute(delete(studies).where(studies.c.id == study_id))
        shared = set(conn.execute(select(instances.c.blob_key).where(instances.c.blob_key.in_(set(keys))))
                     .scalars().all()) if keys else set()
        if not conn.execute(select(func.count()).select_from(studies).where(
                studies.c.patient_pk == row.patient_pk)).scalar_one():
            conn.execute(delete(patients).where(patients.c.id == row.patient_pk))
    if store is not None:
        for key in set(keys) - shared:
            try:
                store.delete(key)
            except OSError:
                log.warning("could not delete blob %s; it is no longer referenced", key)
    return len(keys)
