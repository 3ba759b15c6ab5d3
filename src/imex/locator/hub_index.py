"""Feed (a): every study that passes through the hub. A periodic job reads the studies changed since its
watermark (last_received_at, id), so the DICOM hot path is untouched and a restart resumes where it
stopped."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from imex.db import Database
from imex.db.models import LocatorMark, Patient, Series, Study
from imex.locator.entries import Holding, nhs_number_of, remove_departed, upsert

MARK = "hub"
MARKS = LocatorMark.__table__


def _mark(conn) -> tuple[dt.datetime | None, int]:  # type: ignore[no-untyped-def]
    row = conn.execute(select(MARKS.c.at, MARKS.c.last_id).where(MARKS.c.name == MARK)).first()
    return (row.at, row.last_id) if row else (None, 0)


def run_once(db: Database, batch: int = 200) -> int:
    """Index the next batch of new or changed studies; returns how many studies were looked at."""
    with db.sessions() as s:  # reads only: the session never flushes, so SQLite's write lock is not taken
        at, last_id = _mark(s)
        query = (select(Study, Patient).join(Patient, Patient.id == Study.patient_pk)
                 .where(Study.route_state != "cached")
                 .order_by(Study.last_received_at, Study.id).limit(batch))
        if at is not None:
            query = query.where(or_(Study.last_received_at > at, and_(Study.last_received_at == at,
                                                                        Study.id > last_id)))
        rows = s.execute(query).all()
        series: dict[int, list[Series]] = {}
        if rows:
            for item in s.scalars(select(Series).where(Series.study_id.in_([r.Study.id for r in rows]))):
                series.setdefault(item.study_id, []).append(item)
        s.expunge_all()
        s.rollback()
    with db.engine.begin() as conn:
        for row in rows:
            study, patient = row.Study, row.Patient
            number = nhs_number_of(patient.patient_id, patient.issuer)
            if number is None:
                continue
            items = sorted(series.get(study.id, []), key=lambda s: (s.number is None, s.number or 0))
            upsert(conn, Holding(
                institution_id=study.institution_id, nhs_number=number, study_uid=study.study_uid, source="hub",
                birth_date=patient.birth_date, patient_id=patient.patient_id, accession=study.accession_number,
                study_date=study.study_date, study_time=study.study_time,
                modalities=tuple(study.modalities.split("\\")), description=study.description,
                body_parts=tuple(s.body_part for s in items), num_series=study.num_series,
                num_instances=study.num_instances,
                series=[{"uid": s.series_uid, "modality": s.modality, "number": s.number,
                         "description": s.description, "body_part": s.body_part, "instances": s.num_instances}
                        for s in items]))
        if rows:
            last = rows[-1].Study
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            conn.execute(insert(MARKS).values(name=MARK, at=last.last_received_at, last_id=last.id)
                         .on_conflict_do_nothing())
            conn.execute(update(MARKS).where(MARKS.c.name == MARK).values(at=last.last_received_at, last_id=last.id))
        remove_departed(conn)
    return len(rows)
