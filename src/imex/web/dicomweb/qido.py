"""QIDO-RS (PS3.18 10.6): search studies, series and instances of the index, scoped like the portal.

Matching as the standard describes it: single value (exact), a list of UIDs, wildcards (* and ?), date
and time ranges (A-B, A-, -B), universal (empty) matching, person names case-insensitively and, with
fuzzymatching=true, by the start of any name component. limit/offset page the answer; includefield=all or
named attributes (at instance level, attributes beyond the index are read from the instance itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Select, and_, desc, or_
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Instance, Patient, Series, Study
from imex.web.dicomweb import dicomjson
from imex.web.dicomweb.common import DicomWebRoute, Session_, base_url, metadata, series_row, study_row, viewer
from imex.web.errors import Problem

router = APIRouter(prefix="/dicomweb", route_class=DicomWebRoute, include_in_schema=False)

MAX_LIMIT = 10_000
DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class Key:
    column: Any
    kind: str  # text | uid | date | time | name | number | list


STUDY_KEYS = {
    "StudyInstanceUID": Key(Study.study_uid, "uid"),
    "StudyDate": Key(Study.study_date, "date"),
    "StudyTime": Key(Study.study_time, "time"),
    "AccessionNumber": Key(Study.accession_number, "text"),
    "ModalitiesInStudy": Key(Study.modalities, "list"),
    "ReferringPhysicianName": Key(Study.referring_physician, "name"),
    "StudyDescription": Key(Study.description, "text"),
    "PatientName": Key(Patient.name, "name"),
    "PatientID": Key(Patient.patient_id, "text"),
    "PatientBirthDate": Key(Patient.birth_date, "date"),
    "PatientSex": Key(Patient.sex, "text"),
    "IssuerOfPatientID": Key(Patient.issuer, "text"),
}
SERIES_KEYS = {
    "SeriesInstanceUID": Key(Series.series_uid, "uid"),
    "Modality": Key(Series.modality, "text"),
    "SeriesNumber": Key(Series.number, "number"),
    "SeriesDescription": Key(Series.description, "text"),
    "BodyPartExamined": Key(Series.body_part, "text"),
}
INSTANCE_KEYS = {
    "SOPInstanceUID": Key(Instance.sop_uid, "uid"),
    "SOPClassUID": Key(Instance.sop_class_uid, "uid"),
    "InstanceNumber": Key(Instance.number, "number"),
}
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _range(column: Any, value: str):
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    conditions = [column != ""]
    if low:
        conditions.append(column >= low)
    if high:
        conditions.append(column <= high + ("\uffff" if len(high) < 8 else ""))
    return and_(*conditions)


def condition(key: Key, value: str, fuzzy: bool):
    """The WHERE clause for one matching key; None for universal matching."""
    value = value.strip()
    if value in ("", "*"):
        return None
    if key.kind == "uid":
        uids = [u.strip() for u in value.replace("\\", ",").split(",") if u.strip()]
        return key.column.in_(uids)
    if key.kind == "number":
        try:
            return key.column == int(value)
        except ValueError:
            raise Problem(400, f"{value!r} is not a number") from None
    if key.kind in ("date", "time") and "-" in value:
        return _range(key.column, value)
    if key.kind == "list":  # one of the study's modalities
        return or_(
            *(
                or_(
                    key.column == v,
                    key.column.like(f"{_like(v)}\\\\%", escape="\\"),
                    key.column.like(f"%\\\\{_like(v)}", escape="\\"),
                    key.column.like(f"%\\\\{_like(v)}\\\\%", escape="\\"),
                )
                for v in value.replace(",", "\\").split("\\")
                if v
            )
        )
    if key.kind == "name":
        if fuzzy:
            words = [w for w in value.replace("^", " ").replace(",", " ").split() if w]
            return and_(
                *(
                    or_(
                        key.column.ilike(f"{_like(w)}%", escape="\\"),
                        key.column.ilike(f"%^{_like(w)}%", escape="\\"),
                        key.column.ilike(f"% {_like(w)}%", escape="\\"),
                    )
                    for w in words
                )
            )
        return key.column.ilike(_like(value), escape="\\")
    if "*" in value or "?" in value:
        return key.column.like(_like(value), escape="\\")
    return key.column == value


def _keys_for(level: str) -> dict[str, Key]:
    keys = dict(STUDY_KEYS)
    if level in ("series", "instances"):
        keys.update(SERIES_KEYS)
    if level == "instances":
        keys.update(INSTANCE_KEYS)
    return keys


@dataclass
class Query:
    filters: list
    limit: int
    offset: int
    include: set[str]
    include_all: bool


def parse_query(request: Request, level: str) -> Query:
    keys = _keys_for(level)
    params = request.query_params
    fuzzy = params.get("fuzzymatching", "false").lower() == "true"
    filters, include = [], set()
    for name, value in params.multi_items():
        if name in CONTROL:
            continue
        tag = dicomjson.tag_of(name)
        keyword = dicomjson.keyword(tag) if tag is not None else None
        if keyword not in keys:
            raise Problem(
                400,
                f"{name} is not a matching key this hub supports at {level} level "
                f"(supported: {', '.join(sorted(keys))})",
            )
        clause = condition(keys[keyword], value, fuzzy)
        if clause is not None:
            filters.append(clause)
        include.add(keyword)
    include_all = False
    for value in params.getlist("includefield"):
        for name in value.split(","):
            name = name.strip()
            if name.lower() == "all":
                include_all = True
            elif name:
                tag = dicomjson.tag_of(name)
                if tag is None:
                    raise Problem(400, f"includefield {name!r} is neither a keyword nor a tag")
                include.add(dicomjson.keyword(tag))
    try:
        limit = int(params.get("limit", MAX_LIMIT))
        offset = int(params.get("offset", 0))
    except ValueError:
        raise Problem(400, "limit and offset must be numbers") from None
    if limit < 1 or offset < 0:
        raise Problem(400, "limit must be at least 1 and offset not negative")
    return Query(filters, min(limit, MAX_LIMIT), offset, include, include_all)


def _json(items: list[dict]) -> Response:
    return JSONResponse(items, media_type=DICOM_JSON)


def _page(stmt: Select, q: Query) -> Select:
    return stmt.where(*q.filters).limit(q.limit).offset(q.offset)


def _studies(request: Request, s: Session, p: Principal, extra=()) -> Response:
    q = parse_query(request, "studies")
    stmt = scope.studies_query(p).where(*extra).order_by(desc(Study.study_date), desc(Study.id))
    root = base_url(request)
    return _json(
        [
            dicomjson.answer(dicomjson.study_attributes(st, pa), f"{root}/studies/{st.study_uid}")
            for st, pa, _src in s.execute(_page(stmt, q)).all()
        ]
    )


@router.get("/studies")
def search_studies(request: Request, p: Principal = Depends(viewer), s: Session = Session_) -> Response:
    return _studies(request, s, p)


def _series(request: Request, s: Session, p: Principal, extra=()) -> Response:
    q = parse_query(request, "series")
    stmt = scope.series_query(p).where(*extra).order_by(Study.id, Series.number, Series.id)
    root = base_url(request)
    out = []
    for st, pa, _src, se in s.execute(_page(stmt, q)).all():
        pairs = {**_wanted(dicomjson.study_attributes(st, pa), q), **dicomjson.series_attributes(se)}
        out.append(dicomjson.answer(pairs, f"{root}/studies/{st.study_uid}/series/{se.series_uid}"))
    return _json(out)


def _wanted(study_pairs: dict[str, Any], q: Query) -> dict[str, Any]:
    """At series and instance level, the study's attributes the caller matched on or asked for."""
    keep = {"StudyInstanceUID", "SpecificCharacterSet"}
    return {k: v for k, v in study_pairs.items() if q.include_all or k in keep or k in q.include}


@router.get("/series")
def search_all_series(request: Request, p: Principal = Depends(viewer), s: Session = Session_) -> Response:
    return _series(request, s, p)


@router.get("/studies/{study_uid}/series")
def search_study_series(
    study_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    study_row(s, p, study_uid)
    return _series(request, s, p, (Study.study_uid == study_uid,))


def _instances(request: Request, s: Session, p: Principal, extra=()) -> Response:
    q = parse_query(request, "instances")
    stmt = (
        scope.instances_query(p)
        .where(*extra)
        .order_by(Study.id, Series.number, Series.id, Instance.number, Instance.id)
    )
    root = base_url(request)
    beyond = {k for k in q.include if k not in STUDY_KEYS and k not in SERIES_KEYS and k not in INSTANCE_KEYS}
    out = []
    for st, pa, _src, se, inst in s.execute(_page(stmt, q)).all():
        pairs = {
            **_wanted(dicomjson.study_attributes(st, pa), q),
            **dicomjson.series_attributes(se),
            **dicomjson.instance_attributes(inst),
        }
        extra_json = _from_instance(request, inst, beyond) if beyond else None
        out.append(
            dicomjson.answer(
                pairs, f"{root}/studies/{st.study_uid}/series/{se.series_uid}/instances/{inst.sop_uid}", extra_json
            )
        )
    return _json(out)


def _from_instance(request: Request, inst: Instance, wanted: set[str]) -> dict[str, Any]:
    """Attributes named by includefield that the index does not hold, from the stored instance."""
    try:
        meta = metadata(request, inst.blob_key)
    except OSError:
        return {}
    tags = {dicomjson.hex_tag(t) for t in (dicomjson.tag_of(k) for k in wanted) if t is not None}
    return {t: v for t, v in meta.items() if t in tags}


@router.get("/instances")
def search_all_instances(request: Request, p: Principal = Depends(viewer), s: Session = Session_) -> Response:
    return _instances(request, s, p)


@router.get("/studies/{study_uid}/instances")
def search_study_instances(
    study_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    study_row(s, p, study_uid)
    return _instances(request, s, p, (Study.study_uid == study_uid,))


@router.get("/studies/{study_uid}/series/{series_uid}/instances")
def search_series_instances(
    study_uid: str, series_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    series_row(s, p, study_uid, series_uid)
    return _instances(request, s, p, (Study.study_uid == study_uid, Series.series_uid == series_uid))
