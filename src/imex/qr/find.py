"""C-FIND answers and C-MOVE/C-GET selections, in a node's scope.

A node sees exactly what its institution's users see in the portal (imex.auth.scope, through a
principal for the node): incoming transfers, its own studies, the emergency folders its institution
takes part in and view-cache copies it asked for. Elective folders are for their named members only, so
no node sees them. Nothing outside the scope matches, so a query learns nothing about other studies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Instance, Patient, Series, Study
from imex.directory import NodeInfo
from imex.qr.keys import UNIQUE_KEY, InvalidQuery, Query, vr_of


def node_principal(node: NodeInfo) -> Principal:
    """The node as a principal of its institution that may view studies and transfers, nothing more."""
    return Principal(
        user_id=0,  # no user: no elective-folder membership
        username=f"node:{node.ae_title}",
        institution_id=node.institution_id,
        institution_ods=node.ods_code,
        permissions=frozenset({"studies.view", "transfers.view"}),
    )


def _statement(p: Principal, query: Query) -> Select:
    if query.level == "PATIENT":
        visible = select(Study.patient_pk).where(scope.study_clause(p))
        return select(Patient).where(Patient.id.in_(visible), *query.conditions).order_by(Patient.id)
    if query.level == "STUDY":
        return scope.studies_query(p).where(*query.conditions).order_by(Study.id)
    if query.level == "SERIES":
        return scope.series_query(p).where(*query.conditions).order_by(Study.id, Series.number, Series.id)
    return scope.instances_query(p).where(*query.conditions).order_by(Series.id, Instance.number, Instance.id)


def count_matches(s: Session, p: Principal, query: Query, limit: int) -> int:
    """How many entries match, counting no further than `limit` + 1 (enough to refuse a query that
    matches too many)."""
    return s.scalar(select(func.count()).select_from(_statement(p, query).limit(limit + 1).subquery())) or 0


def _values(level: str, row: Any, s: Session, p: Principal) -> dict[str, Any]:
    """Every key value the index holds for one match, from the patient down to its level."""
    if level == "PATIENT":
        patient = row[0]
        visible = scope.study_clause(p)
        counts = s.execute(
            select(func.count(Study.id), func.sum(Study.num_series), func.sum(Study.num_instances)).where(
                Study.patient_pk == patient.id, visible
            )
        ).one()
        values = _patient(patient)
        values.update(
            NumberOfPatientRelatedStudies=counts[0] or 0,
            NumberOfPatientRelatedSeries=counts[1] or 0,
            NumberOfPatientRelatedInstances=counts[2] or 0,
        )
        return values
    study, patient = row[0], row[1]
    values = _patient(patient)
    values.update(
        StudyInstanceUID=study.study_uid,
        StudyDate=study.study_date,
        StudyTime=study.study_time,
        AccessionNumber=study.accession_number,
        StudyDescription=study.description,
        ReferringPhysicianName=study.referring_physician,
        ModalitiesInStudy=[m for m in study.modalities.split("\\") if m],
        NumberOfStudyRelatedSeries=study.num_series,
        NumberOfStudyRelatedInstances=study.num_instances,
    )
    if level in ("SERIES", "IMAGE"):
        series = row[3]
        values.update(
            SeriesInstanceUID=series.series_uid,
            Modality=series.modality,
            SeriesNumber=series.number,
            SeriesDescription=series.description,
            BodyPartExamined=series.body_part,
            NumberOfSeriesRelatedInstances=series.num_instances,
        )
    if level == "IMAGE":
        instance = row[4]
        values.update(
            SOPInstanceUID=instance.sop_uid,
            SOPClassUID=instance.sop_class_uid,
            InstanceNumber=instance.number,
        )
    return values


def _patient(patient: Patient) -> dict[str, Any]:
    return {
        "PatientName": patient.name,
        "PatientID": patient.patient_id,
        "IssuerOfPatientID": patient.issuer,
        "PatientBirthDate": patient.birth_date,
        "PatientSex": patient.sex,
    }


def _answer(query: Query, values: dict[str, Any], hub_aet: str) -> Dataset:
    """One match as an identifier: the keys asked for (empty where the index holds nothing), and the
    unique keys of its level and the levels above (PS3.4 C.4.1.3.1)."""
    ds = Dataset()
    texts = [v for v in values.values() if isinstance(v, str)]
    if any(not t.isascii() for t in texts):
        ds.SpecificCharacterSet = "ISO_IR 192"
    keywords = list(query.requested)
    for level in query.levels():
        if query.root == "STUDY" and level == "PATIENT":
            continue
        if UNIQUE_KEY[level] not in keywords:
            keywords.append(UNIQUE_KEY[level])
    for keyword in keywords:
        if keyword in ("SpecificCharacterSet", "QueryRetrieveLevel"):
            continue  # set below, once
        if keyword == "RetrieveAETitle":
            ds.RetrieveAETitle = hub_aet
        elif keyword == "InstanceAvailability":
            ds.InstanceAvailability = "ONLINE"
        elif keyword in values and values[keyword] not in (None, "", []):
            value = values[keyword]
            setattr(ds, keyword, str(value) if isinstance(value, int) else value)
        else:
            vr = vr_of(keyword)
            ds.add_new(keyword, vr, Sequence() if vr == "SQ" else None)
    ds.QueryRetrieveLevel = query.level
    return ds


def matches(s: Session, p: Principal, query: Query, hub_aet: str) -> Iterator[Dataset]:
    """The answers to a C-FIND, one identifier per match, in a stable order."""
    for row in s.execute(_statement(p, query)):
        yield _answer(query, _values(query.level, row, s, p), hub_aet)


def instances_to_retrieve(s: Session, p: Principal, query: Query) -> list[tuple[Study, Instance]]:
    """The instances a C-MOVE or C-GET asks for, in the node's scope. The identifier must name what to
    retrieve by the unique key of its level: a retrieve never means "everything visible"."""
    unique = UNIQUE_KEY[query.level]
    if not any(c is not None for c in query.conditions) or unique not in query.requested:
        raise InvalidQuery(f"a {query.level} level retrieve needs {unique}")
    statement = scope.instances_query(p).where(*query.conditions)  # every level: its instances
    rows = s.execute(statement.order_by(Study.id, Series.number, Series.id, Instance.number, Instance.id)).all()
    return [(row[0], row[4]) for row in rows]


__all__ = ["count_matches", "instances_to_retrieve", "matches", "node_principal"]
