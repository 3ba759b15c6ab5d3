"""The DICOMDIR of a study's instances, made by pydicom's FileSet from their headers only.

FileSet decides the File IDs (8-character uppercase components, PS3.10 8.2) and the directory records
(patient/study/series/image); the instances themselves are never re-encoded: the caller puts the stored
bytes under the File IDs this returns. Only headers are read, so a 2 GB study costs a few MB here."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid


@dataclass(frozen=True)
class Member:
    """One stored instance to put in the file-set: its SOP Instance UID and where its bytes are."""

    sop_uid: str
    path: Path


# Attributes the directory records need (Type 1 in PS3.3 F.5) that real studies often lack, with what the
# record says instead. Only the header copy used for the record gets them: the instance is not changed.
RECORD_DEFAULTS: dict[str, str] = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "1",
    "Modality": "OT",
    "SeriesNumber": "0",
}


def _record_header(member: Member, position: int) -> Dataset:
    header = dcmread(member.path, stop_before_pixels=True)
    for keyword, value in RECORD_DEFAULTS.items():
        if not header.get(keyword):
            setattr(header, keyword, value)
    if header.get("InstanceNumber") in (None, ""):
        header.InstanceNumber = position
    return header


def build_dicomdir(members: list[Member], label: str = "IMEX") -> tuple[bytes, dict[str, str]]:
    """(the DICOMDIR's bytes, {SOP Instance UID: File ID with '/' separators}) for `members`. Raises
    ValueError for an instance no standard directory record fits (pydicom says which and why)."""
    fs = FileSet()
    fs.ID = label[:16].upper()
    fs.UID = generate_uid()
    with tempfile.TemporaryDirectory(prefix="imex-dicomdir-") as tmp:
        for position, member in enumerate(members, start=1):
            fs.add(_record_header(member, position))
        root = Path(tmp) / "fileset"
        fs.write(root)
        file_ids: dict[str, str] = {inst.SOPInstanceUID: "/".join(Path(inst.FileID).parts) for inst in fs}
        data = (root / "DICOMDIR").read_bytes()
    missing = {m.sop_uid for m in members} - set(file_ids)
    if missing:
        raise ValueError(f"{len(missing)} instances did not get a File ID in the DICOMDIR")
    return data, file_ids
