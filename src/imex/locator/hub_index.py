"""Feed (a): every study that passes through the hub. A periodic job reads the studies changed since its
watermark (last_received_at, id), so the DICOM hot path is untouched and a restart resumes where it
stopped.

A study is indexed under its NHS number: the Patient ID when it is one (issuer NHS or none), else one in
Other Patient IDs (Other Patient IDs Sequence, whose item's issuer says NHS or nothing, then the retired
Other Patient IDs), as the sweep feed does. The index keeps no Other Patient IDs, so they are read from
the header of one stored instance of the study."""

from __future__ import annotations

import datetime as dt
import logging

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from imex.db import Database
from imex.db.models import Instance, Patient, Series, Study, locator_marks
from imex.harmonise import nhs
from imex.locator.entries import Holding, nhs_number_of, remove_departed, upsert
from imex.store import BlobStore

log = logging.getLogger("imex.locator.hub_index")
_OTHER_IDS = ["OtherPatientIDs", "OtherPatientIDsSequence"]

MARK = "hub"
MARKS = locator_marks


def _mark(conn) -> tuple[dt.datetime | None, int]:
    row = conn.execute(select(MARKS.c.at, MARKS.c.last_id).where(MARKS.c.name == MARK)).first()
    return (row.at, row.last_id) if row else (None, 0)


def _issuer(item: Dataset) -> str:
    issuer = str(item.get("IssuerOfPatientID", "") or "").strip()
    for qualifier in item.get("IssuerOfPatientIDQualifiersSequence", None) or []:
        issuer = issuer or str(qualifier.get("UniversalEntityID", "") or "").strip()
    return issuer


def other_ids(ds: Dataset) -> tuple[str, ...]:
    """A header's Other Patient IDs that may be NHS numbers: those of Other Patient IDs Sequence whose
    issuer is NHS or unstated, then the retired Other Patient IDs (which have no issuer)."""
    found = [
        str(item.get("PatientID", "") or "").strip()
        for item in ds.get("OtherPatientIDsSequence", None) or []
        if not _issuer(item) or nhs.is_nhs_issuer(_issuer(item))
    ]
    retired = ds.get("OtherPatientIDs", None)
    if retired is not None:
        found += [str(v).strip() for v in (retired if isinstance(retired, (list, MultiValue)) else [retired])]
    return tuple(dict.fromkeys(v for v in found if v))


def _other_ids_of(store: BlobStore, blob_key: str) -> tuple[str, ...]:
    try:
        ds = dcmread(store.path(blob_key), stop_before_pixels=True, specific_tags=_OTHER_IDS)
    except Exception as exc:  # deleted meanwhile, or unreadable: indexed when its Patient ID allows
        log.debug("cannot read Other Patient IDs of blob %s: %s", blob_key, exc)
        return ()
    return other_ids(ds)


def run_once(db: Database, batch: int = 200, store: BlobStore | None = None) -> int:
    """Index the next batch of new or changed studies; returns how many studies were looked at. Without
    `store`, only Patient IDs are looked at."""
    with db.read_sessions() as s:  # reads only: on SQLite a read transaction, never waiting for the write lock
        at, last_id = _mark(s)
        query = (
            select(Study, Patient)
            .join(Patient, Patient.id == Study.patient_pk)
            .where(Study.route_state != "cached")
            .order_by(Study.last_received_at, Study.id)
            .limit(batch)
        )
        if at is not None:
            query = query.where(
                or_(Study.last_received_at > at, and_(Study.last_received_at == at, Study.id > last_id))
            )
        rows = s.execute(query).all()
        series: dict[int, list[Series]] = {}
        if rows:
            for item in s.scalars(select(Series).where(Series.study_id.in_([r.Study.id for r in rows]))):
                series.setdefault(item.study_id, []).append(item)
        # one stored instance of each study whose Patient ID is no NHS number, for its Other Patient IDs
        blobs: dict[int, str] = {}
        unnumbered = [r.Study.id for r in rows if nhs_number_of(r.Patient.patient_id, r.Patient.issuer) is None]
        if store is not None and unnumbered:
            first = select(func.min(Instance.id)).where(Instance.study_id.in_(unnumbered)).group_by(Instance.study_id)
            blobs = dict(s.execute(select(Instance.study_id, Instance.blob_key).where(Instance.id.in_(first))).all())
        s.expunge_all()
        s.rollback()
    others = {study_id: _other_ids_of(store, key) for study_id, key in blobs.items()} if store is not None else {}
    with db.engine.begin() as conn:
        for row in rows:
            study, patient = row.Study, row.Patient
            number = nhs_number_of(patient.patient_id, patient.issuer, others.get(study.id, ()))
            if number is None:
                continue
            items = sorted(series.get(study.id, []), key=lambda s: (s.number is None, s.number or 0))
            upsert(
                conn,
                Holding(
                    institution_id=study.institution_id,
                    nhs_number=number,
                    study_uid=study.study_uid,
                    source="hub",
                    birth_date=patient.birth_date,
                    patient_id=patient.patient_id,
                    accession=study.accession_number,
                    study_date=study.study_date,
                    study_time=study.study_time,
                    modalities=tuple(study.modalities.split("\\")),
                    description=study.description,
                    body_parts=tuple(s.body_part for s in items),
                    num_series=study.num_series,
                    num_instances=study.num_instances,
                    series=[
                        {
                            "uid": s.series_uid,
                            "modality": s.modality,
                            "number": s.number,
                            "description": s.description,
                            "body_part": s.body_part,
                            "instances": s.num_instances,
                        }
                        for s in items
                    ],
                ),
            )
        if rows:
            last = rows[-1].Study
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            conn.execute(
                insert(MARKS).values(name=MARK, at=last.last_received_at, last_id=last.id).on_conflict_do_nothing()
            )
            conn.execute(update(MARKS).where(MARKS.c.name == MARK).values(at=last.last_received_at, last_id=last.id))
        remove_departed(conn)
    return len(rows)
