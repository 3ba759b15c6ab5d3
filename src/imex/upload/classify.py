"""What a staged file is: a DICOM instance (with what the review shows), a DICOMDIR, a zip, or a file
skipped with the reason. Only what the review needs is read, with the same checks as DICOM arrivals
(imex.dicom.parse), so a file that passes here is one the ingest path will accept."""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import UID

from imex.dicom.parse import InvalidInstance, read_instance
from imex.dicom.part10 import dataset_offset, read_meta

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class Found:
    kind: str  # instance | dicomdir | zip | skipped
    reason: str = ""
    study_uid: str = ""
    sop_uid: str = ""
    info: dict = field(default_factory=dict)

    def info_json(self) -> str:
        return json.dumps(self.info, separators=(",", ":")) if self.info else ""


def classify(path: Path, name: str) -> Found:
    """Look at a staged file (`name` is the path the browser gave, for the zip suffix only)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head in _ZIP_MAGIC or (name.lower().endswith(".zip") and zipfile.is_zipfile(path)):
        return Found("zip")
    data = path.read_bytes()
    if not data:
        return Found("skipped", "empty file")
    try:
        meta = read_meta(data)
    except (ValueError, struct.error) as exc:
        return Found("skipped", str(exc))
    if meta.get(0x0002) == MEDIA_STORAGE_DIRECTORY:
        return Found("dicomdir")
    syntax = meta[0x0010]
    try:
        fields = read_instance(data[dataset_offset(data) :], syntax)
    except (InvalidInstance, struct.error, ValueError) as exc:
        return Found("skipped", f"DICOM file the hub cannot accept: {exc}"[:300])
    info = {
        "patient_id": fields.patient_id,
        "issuer": fields.issuer,
        "patient_name": fields.patient_name,
        "birth_date": fields.birth_date,
        "sex": fields.sex,
        "study_date": fields.study_date,
        "study_description": fields.study_description,
        "accession": fields.accession_number,
        "modality": fields.modality,
        "series_uid": fields.series_uid,
        "series_description": fields.series_description,
        "transfer_syntax": syntax,
        "sop_class": fields.sop_class_uid,
        "sop_class_name": UID(fields.sop_class_uid).name,
    }
    return Found("instance", study_uid=fields.study_uid, sop_uid=fields.sop_uid, info=info)
