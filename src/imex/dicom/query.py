"""C-FIND from the hub to an institution's PACS at study, series and image level (Study Root): what a
sender selects from for a pre-authorised transfer, what fulfils a request, what the locator's sweeps
index. Answers are plain dataclasses; a node that cannot be asked, or answers badly, raises FindFailed
with a message a PACS manager can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FindFailed",
    "NodeAddress",
    "StudyQuery",
    "StudyMatch",
    "SeriesMatch",
    "InstanceMatch",
    "association",
    "find_studies",
    "find_series",
    "find_instances",
    "clean",
]


class FindFailed(ConnectionError):
    """The node could not be asked, or refused the query; the message says which."""


@dataclass(frozen=True)
class NodeAddress:
    """Where a node listens and what it is called."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class StudyQuery:
    """What to match; empty fields match anything. Dates are YYYYMMDD; `modality` is one code."""

    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    accession: str = ""
    study_uid: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""

    def is_empty(self) -> bool:
        return not any(
            (
                self.patient_id,
                self.patient_name,
                self.birth_date,
                self.accession,
                self.study_uid,
                self.modality,
                self.date_from,
                self.date_to,
            )
        )


@dataclass(frozen=True)
class StudyMatch:
    study_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession: str
    study_date: str
    study_time: str
    description: str
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    series_count: int = 0
    instance_count: int = 0
    other_ids: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class SeriesMatch:
    series_uid: str
    modality: str
    number: str
    description: str
    body_part: str
    instance_count: int


@dataclass(frozen=True)
class InstanceMatch:
    sop_instance_uid: str
    sop_class_uid: str
    number: str


def clean(value: str, limit: int = 64, wildcards: bool = False) -> str:
    """A query value without control characters, multi-value separators or (unless allowed) wildcards."""
    banned = "\\" if wildcards else "\\*?"
    return "".join(ch for ch in str(value) if ch.isprintable() and ch not in banned)[:limit]


def _date_range(date_from: str, date_to: str) -> str:
    if date_from or date_to:
        return f"{clean(date_from, 8)}-{clean(date_to, 8)}"
    return ""


@contextmanager
def association(hub_aet: str, node: NodeAddress, model: Any, timeout: float) -> Iterator[Any]:
    """An established association to `node` proposing `model`, released afterwards."""
    from pynetdicom import AE

    from imex.dicom import net

    net.install()
    ae = AE(ae_title=hub_aet)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.add_requested_context(model)
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    except (OSError, ValueError) as exc:
        raise FindFailed(f"cannot reach {node}: {exc}") from None
    if not assoc.is_established:
        raise FindFailed(
            f"{node} did not accept an association from {hub_aet}: it must know the hub's AE title "
            f"{hub_aet} as a peer allowed to query and retrieve"
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _matches(hub_aet: str, node: NodeAddress, query: Any, timeout: float, limit: int) -> list[Any]:
    """The identifiers a Study Root C-FIND returns, at most `limit` (then the query is cancelled)."""
    from pynetdicom.sop_class import uid_to_sop_class

    Model = uid_to_sop_class("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Query/Retrieve Information Model - FIND

    found: list[Any] = []
    with association(hub_aet, node, Model, timeout) as assoc:
        try:
            responses = assoc.send_c_find(query, Model)
            for status, identifier in responses:
                if not status or "Status" not in status:
                    raise FindFailed(f"{node} stopped answering the query")
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    if identifier is not None:
                        found.append(identifier)
                    if len(found) >= limit:
                        break
                elif code != 0x0000:
                    raise FindFailed(f"{node} refused the query with status 0x{code:04X}")
        except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
            raise FindFailed(f"{node} sent an answer the hub cannot read: {exc}") from None
    return found


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _int(ds: Any, keyword: str) -> int:
    try:
        return int(ds.get(keyword) or 0)
    except (TypeError, ValueError):
        return 0


def _multi(ds: Any, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(str(v) for v in value if str(v))
    return (str(value),)


def find_studies(
    hub_aet: str, node: NodeAddress, q: StudyQuery, timeout: float = 30.0, limit: int = 200
) -> list[StudyMatch]:
    """Studies `node` holds that match `q`, newest first. An empty query is refused: it would list a PACS."""
    from pydicom.dataset import Dataset

    if q.is_empty():
        raise ValueError(
            "say what to search for: a patient ID, name, date of birth, accession number, study UID, modality or dates"
        )
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = clean(q.patient_id)
    ds.PatientName = clean(q.patient_name, 64, wildcards=True)
    ds.PatientBirthDate = clean(q.birth_date, 8)
    ds.AccessionNumber = clean(q.accession, 16)
    ds.StudyInstanceUID = clean(q.study_uid)
    ds.ModalitiesInStudy = clean(q.modality, 16)
    ds.StudyDate = _date_range(q.date_from, q.date_to)
    for keyword in (
        "IssuerOfPatientID",
        "PatientSex",
        "StudyTime",
        "StudyDescription",
        "OtherPatientIDs",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "BodyPartExamined",
    ):
        setattr(ds, keyword, "")
    found = [
        StudyMatch(
            study_uid=_text(i, "StudyInstanceUID"),
            patient_id=_text(i, "PatientID"),
            issuer=_text(i, "IssuerOfPatientID"),
            patient_name=_text(i, "PatientName"),
            birth_date=_text(i, "PatientBirthDate"),
            sex=_text(i, "PatientSex"),
            accession=_text(i, "AccessionNumber"),
            study_date=_text(i, "StudyDate"),
            study_time=_text(i, "StudyTime"),
            description=_text(i, "StudyDescription"),
            modalities=_multi(i, "ModalitiesInStudy"),
            body_parts=_multi(i, "BodyPartExamined"),
            series_count=_int(i, "NumberOfStudyRelatedSeries"),
            instance_count=_int(i, "NumberOfStudyRelatedInstances"),
            other_ids=_multi(i, "OtherPatientIDs"),
        )
        for i in _matches(hub_aet, node, ds, timeout, limit)
    ]
    found = [m for m in found if m.study_uid]
    return sorted(found, key=lambda m: (m.study_date, m.study_time), reverse=True)


def find_series(
    hub_aet: str, node: NodeAddress, study_uid: str, timeout: float = 30.0, limit: int = 1000
) -> list[SeriesMatch]:
    """The series of one study on `node`."""
    from pydicom.dataset import Dataset

    if not clean(study_uid):
        raise ValueError("a study instance UID is needed")
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = clean(study_uid)
    for keyword in (
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    ):
        setattr(ds, keyword, "")
    found = [
        SeriesMatch(
            series_uid=_text(i, "SeriesInstanceUID"),
            modality=_text(i, "Modality"),
            number=_text(i, "SeriesNumber"),
            description=_text(i, "SeriesDescription"),
            body_part=_text(i, "BodyPartExamined"),
            instance_count=_int(i, "NumberOfSeriesRelatedInstances"),
        )
        for i in _matches(hub_aet, node, ds, timeout, limit)
    ]
    return [s for s in found if s.series_uid]


def find_instances(
    hub_aet: str, node: NodeAddress, study_uid: str, series_uid: str = "", timeout: float = 30.0, limit: int = 100000
) -> list[InstanceMatch]:
    """The instances of a study (or one series of it) on `node`: what a delivery check compares."""
    from pydicom.dataset import Dataset

    if not clean(study_uid):
        raise ValueError("a study instance UID is needed")
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = clean(study_uid)
    ds.SeriesInstanceUID = clean(series_uid)
    for keyword in ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"):
        setattr(ds, keyword, "")
    found = [
        InstanceMatch(_text(i, "SOPInstanceUID"), _text(i, "SOPClassUID"), _text(i, "InstanceNumber"))
        for i in _matches(hub_aet, node, ds, timeout, limit)
    ]
    return [m for m in found if m.sop_instance_uid]
