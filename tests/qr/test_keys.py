"""C-FIND matching (PS3.4 C.2.2.2) as SQL on the index: each kind of key against a few studies."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session

from imex.db.models import Base, Institution, Patient, Series, Study
from imex.qr.keys import InvalidQuery, parse

ROWS = [
    # study uid, patient name, date, time, modalities, accession, series number
    ("1.2.3.1", "JONES^ALAN", "20260101", "083000", "CT", "A1", 1),
    ("1.2.3.2", "Jones^Ann", "20260615", "120030.5", "CT\\SR", "A2", 2),
    ("1.2.3.3", "SMITH^JO", "20261207", "235959", "MR", "B%1", 3),
]


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(Institution).values(id=1, ods_code="RJZ", name="King's"))
        for n, (uid, name, date, time, modalities, accession, number) in enumerate(ROWS, 1):
            conn.execute(insert(Patient).values(id=n, institution_id=1, patient_id=f"P{n}", name=name))
            conn.execute(
                insert(Study).values(
                    id=n,
                    study_uid=uid,
                    patient_pk=n,
                    institution_id=1,
                    study_date=date,
                    study_time=time,
                    modalities=modalities,
                    accession_number=accession,
                )
            )
            conn.execute(insert(Series).values(id=n, study_id=n, series_uid=f"{uid}.1", number=number, modality="CT"))
    return engine


def matching(engine, root: str = "STUDY", **keys: str) -> list[str]:  # type: ignore[no-untyped-def]
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    query = parse(root, ds)
    statement = select(Study.study_uid).join(Patient, Patient.id == Study.patient_pk).where(*query.conditions)
    with Session(engine) as s:
        return sorted(s.scalars(statement.order_by(Study.id)))


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ["1.2.3.1", "1.2.3.2", "1.2.3.3"]),  # universal
        ({"PatientName": "jones*"}, ["1.2.3.1", "1.2.3.2"]),  # person names: wildcard, any case
        ({"PatientName": "JONES^ALAN"}, ["1.2.3.1"]),  # single value
        ({"PatientName": "JONES"}, []),  # no implicit prefix: fuzzy matching is off
        ({"PatientName": "?MITH^JO"}, ["1.2.3.3"]),
        ({"StudyInstanceUID": "1.2.3.1\\1.2.3.3"}, ["1.2.3.1", "1.2.3.3"]),  # list of UIDs
        ({"StudyDate": "20260101-20260630"}, ["1.2.3.1", "1.2.3.2"]),  # range
        ({"StudyDate": "20260616-"}, ["1.2.3.3"]),
        ({"StudyDate": "-20260101"}, ["1.2.3.1"]),
        ({"StudyDate": "20261207"}, ["1.2.3.3"]),
        ({"StudyTime": "1200-1201"}, ["1.2.3.2"]),  # a time range's upper bound includes its seconds
        ({"ModalitiesInStudy": "SR"}, ["1.2.3.2"]),  # any modality of the study
        ({"ModalitiesInStudy": "MR\\SR"}, ["1.2.3.2", "1.2.3.3"]),
        ({"ModalitiesInStudy": "C"}, []),  # a code, not a substring
        ({"AccessionNumber": "B%1"}, ["1.2.3.3"]),  # SQL wildcards in a value are plain characters
        ({"AccessionNumber": "A*"}, ["1.2.3.1", "1.2.3.2"]),
        ({"AccessionNumber": "a1"}, []),  # other values match case-sensitively
        ({"StudyID": "whatever"}, ["1.2.3.1", "1.2.3.2", "1.2.3.3"]),  # not indexed: not matched
    ],
)
def test_matching(engine, keys, expected):  # type: ignore[no-untyped-def]
    assert matching(engine, **keys) == expected


@pytest.mark.parametrize(
    ("root", "level", "keys", "message"),
    [
        ("STUDY", "PATIENT", {}, "not one of STUDY, SERIES, IMAGE"),
        ("PATIENT", "", {}, "not one of PATIENT"),
        ("STUDY", "STUDY", {"StudyInstanceUID": "1.2.*"}, "not a UID"),
        ("STUDY", "STUDY", {"StudyDate": "2026-01-01"}, "not a valid date"),
        ("STUDY", "STUDY", {"StudyDate": "-"}, "no bounds"),
        ("STUDY", "STUDY", {"StudyTime": "25:00"}, "not a valid time"),
    ],
)
def test_invalid_identifiers_are_refused_with_a_reason(root, level, keys, message):  # type: ignore[no-untyped-def]
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    with pytest.raises(InvalidQuery, match=message):
        parse(root, ds)


def test_the_audit_names_the_keys_asked():
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CT"
    ds.SeriesDescription = ""
    query = parse("STUDY", ds)
    assert query.asked == "Modality=CT StudyInstanceUID=1.2.3"  # in the identifier's (tag) order
    assert query.levels() == ("STUDY", "SERIES")
    assert "SeriesDescription" in query.requested
