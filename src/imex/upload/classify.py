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
from imex.dicom.part10 import dataset_offset

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


def file_meta(data: bytes) -> dict[int, str]:
    """The text elements of a Part 10 file's meta group by element number (0x0002 SOP class, 0x0003 SOP
    instance, 0x0010 transfer syntax); ValueError when there is no meta group."""
    if data[128:132] != b"DICM":
        raise ValueError("not a DICOM file (no DICM prefix at byte 128)")
    found, pos = {}, 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack_from("<L", data, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        if start + length > len(data):
            raise ValueError("the DICOM file meta group is truncated")
        if vr in (b"UI", b"AE", b"SH"):
            found[element] = data[start:start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    if not found.get(0x0010):
        raise ValueError("the DICOM file meta group has no Transfer Syntax UID")
    return found


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
        meta = file_meta(data)
    except (ValueError, struct.error) as exc:
        return Found("skipped", str(exc))
    if meta.get(0x0002) == MEDIA_STORAGE_DIRECTORY:
        return Found("dicomdir")
    syntax = meta[0x0010]
    try:
        fields = read_instance(data[dataset_offset(data):], syntax)
    except (InvalidInstance, struct.error, ValueError) as exc:
        return Found("skipped", f"DICOM file the hub cannot accept: {exc}"[:300])
    info = {
        "patient_id": fields.patient_id, "issuer": fields.issuer, "patient_name": fields.patient_name,
        "birth_date": fields.birth_date, "sex": fields.sex, "study_date": fields.study_date,
        "study_description": fields.study_description, "accession": fields.accession_number,
        "modality": fields.modality, "series_uid": fields.series_uid, "series_description": fields.series_description,
        "transfer_syntax": syntax, "sop_class": fields.sop_class_uid,
        "sop_class_name": UID(fields.sop_class_uid).name,
    }
    return Found("instance", study_uid=fields.study_uid, sop_uid=fields.sop_uid, info=info)
