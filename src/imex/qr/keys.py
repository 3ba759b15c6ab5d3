"""The attributes a node may query by, level by level, and how each matches (PS3.4 C.2.2.2): single
value, list of UIDs, wildcard (* and ?), range (dates and times), universal (empty). Fuzzy matching is
off; person names match without regard to case, other values exactly.

An identifier becomes a `Query`: its level, the SQL conditions on the index, and the keys to return.
Keys the index does not hold are returned empty and not matched, as the standard allows for optional
keys; an identifier that is not a valid query raises InvalidQuery with the reason for the caller."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, and_, func, literal, or_

from imex.db.models import Instance, Patient, Series, Study

LEVELS = {"PATIENT": ("PATIENT", "STUDY", "SERIES", "IMAGE"), "STUDY": ("STUDY", "SERIES", "IMAGE")}


class InvalidQuery(ValueError):
    """The identifier is not a query the hub can answer; the message goes to the caller as ErrorComment."""


@dataclass(frozen=True)
class Key:
    """A queryable attribute: the index column that holds it and how it matches."""

    column: Any  # an index column, or None for values computed per answer (counts)
    kind: str  # uid | text | pn | cs | date | time | number | modalities | count


PATIENT_KEYS = {
    "PatientName": Key(Patient.name, "pn"),
    "PatientID": Key(Patient.patient_id, "text"),
    "IssuerOfPatientID": Key(Patient.issuer, "text"),
    "PatientBirthDate": Key(Patient.birth_date, "date"),
    "PatientSex": Key(Patient.sex, "cs"),
    "NumberOfPatientRelatedStudies": Key(None, "count"),
    "NumberOfPatientRelatedSeries": Key(None, "count"),
    "NumberOfPatientRelatedInstances": Key(None, "count"),
}
STUDY_KEYS = {
    "StudyInstanceUID": Key(Study.study_uid, "uid"),
    "StudyDate": Key(Study.study_date, "date"),
    "StudyTime": Key(Study.study_time, "time"),
    "AccessionNumber": Key(Study.accession_number, "text"),
    "StudyDescription": Key(Study.description, "text"),
    "ReferringPhysicianName": Key(Study.referring_physician, "pn"),
    "ModalitiesInStudy": Key(Study.modalities, "modalities"),
    "NumberOfStudyRelatedSeries": Key(Study.num_series, "count"),
    "NumberOfStudyRelatedInstances": Key(Study.num_instances, "count"),
}
SERIES_KEYS = {
    "SeriesInstanceUID": Key(Series.series_uid, "uid"),
    "Modality": Key(Series.modality, "cs"),
    "SeriesNumber": Key(Series.number, "number"),
    "SeriesDescription": Key(Series.description, "text"),
    "BodyPartExamined": Key(Series.body_part, "cs"),
    "NumberOfSeriesRelatedInstances": Key(Series.num_instances, "count"),
}
IMAGE_KEYS = {
    "SOPInstanceUID": Key(Instance.sop_uid, "uid"),
    "SOPClassUID": Key(Instance.sop_class_uid, "uid"),
    "InstanceNumber": Key(Instance.number, "number"),
}
KEYS_AT = {"PATIENT": PATIENT_KEYS, "STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS, "IMAGE": IMAGE_KEYS}
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
# answered by the hub whatever the level, never matched
ANSWERED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"}

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NUMBER = re.compile(r"^[+-]?\d{1,12}$")


@dataclass(frozen=True)
class Query:
    """A checked identifier: the model's root, the level, the conditions and the keys to answer."""

    root: str
    level: str
    conditions: tuple[ColumnElement[bool], ...]
    requested: tuple[str, ...]  # keywords of the identifier, in its order
    asked: str  # the non-empty keys, for the audit trail

    def levels(self) -> tuple[str, ...]:
        """The levels from the root down to this query's level."""
        chain = LEVELS[self.root]
        return chain[: chain.index(self.level) + 1]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _like(column: Any, pattern: str, fold: bool) -> ColumnElement[bool]:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    escaped = escaped.replace("*", "%").replace("?", "_")
    if fold:
        return func.lower(column).like(escaped.lower(), escape="\\")
    return column.like(escaped, escape="\\")


def _range(column: Any, value: str, pattern: re.Pattern[str], what: str) -> ColumnElement[bool]:
    low, _, high = value.partition("-")
    for part in (low, high):
        if part and not pattern.match(part):
            raise InvalidQuery(f"{what} {value!r} is not a valid {what.lower()} or range")
    if "-" not in value:
        return column == low
    if not low and not high:
        raise InvalidQuery(f"{what} range '-' has no bounds")
    conditions = [column != ""]
    if low:
        conditions.append(column >= low)
    if high:
        # a time range's upper bound includes its fractions: 1200 matches 120059.5
        conditions.append(column <= (high if pattern is _DATE else high + "\uffff"))
    return and_(*conditions)


def condition(keyword: str, key: Key, value: str) -> ColumnElement[bool] | None:
    """The SQL condition for one key's value; None when it matches everything (universal, or a count)."""
    if not value or key.column is None or key.kind == "count":
        return None
    column = key.column
    if key.kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        bad = [u for u in uids if len(u) > 64 or not _UID.match(u)]
        if bad:
            raise InvalidQuery(f"{keyword} {bad[0][:40]!r} is not a UID (wildcards are not allowed in UIDs)")
        return column.in_(uids) if len(uids) > 1 else column == uids[0]
    if key.kind in ("date", "time"):
        pattern, what = (_DATE, "Date") if key.kind == "date" else (_TIME, "Time")
        values = [v.strip() for v in value.split("\\") if v.strip()]
        return or_(*(_range(column, v, pattern, what) for v in values))
    if key.kind == "number":
        numbers = [v.strip() for v in value.split("\\") if v.strip()]
        if not all(_NUMBER.match(n) for n in numbers):
            raise InvalidQuery(f"{keyword} {value[:40]!r} is not a number")
        return column.in_([int(n) for n in numbers])
    if key.kind == "modalities":
        codes = [c.strip() for c in value.split("\\") if c.strip()]
        stored = literal("\\").concat(column).concat("\\")  # \CT\SR\: each code between separators
        return or_(*(stored.like("%\\" + re.sub(r"[%_#]", "", c) + "\\%", escape="#") for c in codes))
    fold = key.kind == "pn"
    alternatives = [v for v in value.split("\\") if v] if key.kind != "pn" else [value]
    clauses = []
    for alternative in alternatives:
        if "*" in alternative or "?" in alternative:
            clauses.append(_like(column, alternative, fold))
        elif fold:
            clauses.append(func.lower(column) == alternative.lower())
        else:
            clauses.append(column == alternative)
    return or_(*clauses)


def parse(root: str, identifier: Dataset) -> Query:
    """Check an identifier against the model's levels and keys and turn it into a Query."""
    level = _text(identifier.get("QueryRetrieveLevel", "")).upper()
    if level not in LEVELS[root]:
        raise InvalidQuery(
            f"Query/Retrieve Level {level[:16]!r} is not one of {', '.join(LEVELS[root])} "
            f"in the {root.title()} Root model"
        )
    chain = LEVELS[root]
    usable: dict[str, Key] = {}
    for each in chain[: chain.index(level) + 1]:
        usable.update(KEYS_AT[each])
    if root == "STUDY":
        usable.update(PATIENT_KEYS)  # Study Root: patient attributes are study-level keys
    conditions = []
    requested = []
    asked = []
    for element in identifier:
        if element.tag.group in (0x0000, 0x0002) or element.tag.is_private:
            continue
        keyword = keyword_for_tag(element.tag)
        if not keyword:
            continue
        requested.append(keyword)
        if keyword in ANSWERED:
            continue
        if element.VR == "SQ":
            if len(element.value):
                asked.append(f"{keyword}=(sequence)")
            continue  # sequence keys: answered empty (the index holds no sequences), never matched
        value = _text(element.value)
        if value:
            asked.append(f"{keyword}={value[:64]}")
        key = usable.get(keyword)
        if key is None:
            continue  # an optional key the index does not hold: answered empty, not matched
        clause = condition(keyword, key, value)
        if clause is not None:
            conditions.append(clause)
    return Query(root, level, tuple(conditions), tuple(requested), " ".join(asked)[:1000])


def vr_of(keyword: str) -> str:
    """The VR of a standard attribute, for answering keys the hub holds no value for."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return dictionary_VR(tag) if tag is not None else "UN"
