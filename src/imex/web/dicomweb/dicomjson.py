"""DICOM JSON (PS3.18 F.2): index rows as QIDO-RS answers, stored instances as WADO-RS metadata."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from imex.db.models import Instance, Patient, Series, Study

# bulk values larger than this are left out of metadata (the pixels are fetched as frames or rendered)
INLINE_LIMIT = 16 * 1024


def tag_of(name: str) -> int | None:
    """A keyword (PatientName) or an 8-digit hex tag (00100010) as a tag number."""
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    return tag_for_keyword(name)


def hex_tag(tag: int) -> str:
    return f"{tag:08X}"


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """(hex tag, JSON element) for a value from the index; empty values become an element without Value."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    out: dict[str, Any] = {"vr": vr}
    if value is None or value == "":
        return hex_tag(tag), out
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        out["Value"] = [{"Alphabetic": str(v)} for v in values]
    elif vr in ("IS", "US", "UL", "SL", "SS"):
        out["Value"] = [int(v) for v in values]
    else:
        out["Value"] = [str(v) for v in values]
    return hex_tag(tag), out


def _attributes(pairs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(sorted(element(k, v) for k, v in pairs.items()))


def study_attributes(study: Study, patient: Patient) -> dict[str, Any]:
    return {
        "SpecificCharacterSet": "ISO_IR 192",
        "StudyInstanceUID": study.study_uid,
        "StudyDate": study.study_date,
        "StudyTime": study.study_time,
        "AccessionNumber": study.accession_number,
        "ModalitiesInStudy": [m for m in study.modalities.split("\\") if m],
        "ReferringPhysicianName": study.referring_physician,
        "StudyDescription": study.description,
        "PatientName": patient.name,
        "PatientID": patient.patient_id,
        "IssuerOfPatientID": patient.issuer,
        "PatientBirthDate": patient.birth_date,
        "PatientSex": patient.sex,
        "NumberOfStudyRelatedSeries": study.num_series,
        "NumberOfStudyRelatedInstances": study.num_instances,
    }


def series_attributes(series: Series) -> dict[str, Any]:
    return {
        "SeriesInstanceUID": series.series_uid,
        "Modality": series.modality,
        "SeriesDescription": series.description,
        "SeriesNumber": series.number,
        "BodyPartExamined": series.body_part,
        "NumberOfSeriesRelatedInstances": series.num_instances,
    }


def instance_attributes(instance: Instance) -> dict[str, Any]:
    return {
        "SOPInstanceUID": instance.sop_uid,
        "SOPClassUID": instance.sop_class_uid,
        "InstanceNumber": instance.number,
        "AvailableTransferSyntaxUID": instance.transfer_syntax_uid,
    }


def answer(pairs: dict[str, Any], retrieve_url: str, extra: dict[str, dict[str, Any]] | None = None) -> dict:
    out = _attributes({**pairs, "RetrieveURL": retrieve_url})
    if extra:
        out.update(extra)
    return dict(sorted(out.items()))


def metadata(ds: Dataset) -> dict[str, Any]:
    """An instance's attributes as DICOM JSON, without pixel data and other large binary values (an
    attribute that cannot be decoded is left out rather than failing the whole answer)."""
    kept = Dataset()
    for elem in ds:
        if elem.tag.group != 0x7FE0:
            kept.add(elem)
    result = _strip(
        kept.to_json_dict(
            bulk_data_threshold=INLINE_LIMIT, bulk_data_element_handler=lambda _e: _BULK, suppress_invalid_tags=True
        )
    )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax:
        result["00020010"] = {"vr": "UI", "Value": [str(syntax)]}
    return dict(sorted(result.items()))


_BULK = "urn:imex:bulk-left-out"


def _strip(node: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for tag, elem in node.items():
        if elem.get("BulkDataURI") == _BULK:
            continue
        if elem.get("vr") == "SQ" and "Value" in elem:
            elem = {**elem, "Value": [_strip(item) for item in elem["Value"]]}
        out[tag] = elem
    return out


def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or hex_tag(tag)
