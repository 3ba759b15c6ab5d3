"""What an upload holds, as the user reviews it before sending: patients and their studies (date,
modality, description, instances), the files skipped with the reason, and what each DICOMDIR lists
(files it names that did not arrive; files it does not name are accepted all the same)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydicom import dcmread
from sqlalchemy import Connection, select

from imex.db.models import upload_files

_files = upload_files


@dataclass(frozen=True)
class Instance:
    file_id: int
    path: str
    staged_name: str
    study_uid: str
    sop_uid: str
    stored: bool
    info: dict


def instances_and_skipped(conn: Connection, upload_id: int) -> tuple[list[Instance], list[dict]]:
    """The instances to send (each SOP Instance UID once) and the skipped files with their reasons."""
    rows = conn.execute(select(_files).where(_files.c.upload_id == upload_id).order_by(_files.c.id)).all()
    seen: dict[str, str] = {}
    kept: list[Instance] = []
    skipped: list[dict] = []
    for row in rows:
        if row.kind == "skipped":
            skipped.append({"path": row.path, "reason": row.reason})
        elif row.kind == "instance":
            if row.sop_uid in seen:
                skipped.append({"path": row.path, "reason": f"the same instance as {seen[row.sop_uid]}"})
                continue
            seen[row.sop_uid] = row.path
            kept.append(
                Instance(
                    row.id,
                    row.path,
                    row.staged_name,
                    row.study_uid,
                    row.sop_uid,
                    row.stored,
                    json.loads(row.info or "{}"),
                )
            )
    return kept, skipped


def _studies(instances: list[Instance]) -> list[dict]:
    patients: dict[tuple, dict] = {}
    studies: dict[str, dict] = {}
    for inst in instances:
        i = inst.info
        key = (i.get("patient_id", ""), i.get("issuer", ""), i.get("patient_name", ""))
        patient = patients.setdefault(
            key,
            {
                "patient_id": key[0],
                "issuer": key[1],
                "name": key[2],
                "birth_date": i.get("birth_date", ""),
                "sex": i.get("sex", ""),
                "studies": [],
            },
        )
        study = studies.get(inst.study_uid)
        if study is None:
            study = studies[inst.study_uid] = {
                "study_uid": inst.study_uid,
                "date": i.get("study_date", ""),
                "description": i.get("study_description", ""),
                "accession": i.get("accession", ""),
                "modalities": [],
                "series": set(),
                "instances": 0,
            }
            patient["studies"].append(study)
        study["instances"] += 1
        study["series"].add(i.get("series_uid", ""))
        if i.get("modality") and i["modality"] not in study["modalities"]:
            study["modalities"].append(i["modality"])
    for study in studies.values():
        study["series"] = len(study["series"])
        study["modalities"] = "\\".join(study["modalities"])
    return list(patients.values())


def _parts(value) -> list[str]:
    """A Referenced File ID's components (one value is a str, several a list)."""
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _dicomdirs(conn: Connection, upload_id: int, folder: Path) -> list[dict]:
    """For each DICOMDIR: how many files it lists, and those that did not arrive (paths are matched
    case-insensitively, relative to the DICOMDIR's folder, as on a CD)."""
    rows = conn.execute(
        select(_files.c.path, _files.c.staged_name).where(_files.c.upload_id == upload_id, _files.c.kind == "dicomdir")
    ).all()
    if not rows:
        return []
    present = {
        p.lower()
        for p in conn.execute(
            select(_files.c.path).where(_files.c.upload_id == upload_id, _files.c.kind.in_(("instance", "skipped")))
        ).scalars()
    }
    out = []
    for path, staged in rows:
        base = PurePosixPath(path).parent
        if not (folder / staged).exists():  # sent, discarded or expired: its files are gone
            out.append({"path": path, "listed": 0, "missing": [], "missing_count": 0, "problem": "no longer staged"})
            continue
        try:
            listed = [
                str(base.joinpath(*_parts(record.ReferencedFileID)))
                for record in dcmread(folder / staged).DirectoryRecordSequence
                if "ReferencedFileID" in record
            ]
        except Exception as exc:  # a damaged DICOMDIR is reported, never fatal: every file is looked at anyway
            out.append(
                {
                    "path": path,
                    "listed": 0,
                    "missing": [],
                    "missing_count": 0,
                    "problem": f"cannot be read: {exc}"[:200],
                }
            )
            continue
        missing = [p.removeprefix("./") for p in listed if p.removeprefix("./").lower() not in present]
        out.append(
            {"path": path, "listed": len(listed), "missing": missing[:50], "missing_count": len(missing), "problem": ""}
        )
    return out


def review(conn: Connection, upload, folder: Path) -> dict:
    instances, skipped = instances_and_skipped(conn, upload.id)
    arriving = list(
        conn.execute(
            select(_files.c.path).where(_files.c.upload_id == upload.id, _files.c.kind == "").order_by(_files.c.id)
        ).scalars()
    )
    return {
        "id": upload.id,
        "state": upload.state,
        "username": upload.username,
        "created_at": upload.created_at.isoformat() + "Z",
        "expires_at": upload.expires_at.isoformat() + "Z",
        "staged_bytes": upload.staged_bytes,
        "instances": len(instances),
        "studies": len({i.study_uid for i in instances}),
        "patients": _studies(instances),
        "skipped": skipped,
        "arriving": arriving,
        "dicomdirs": _dicomdirs(conn, upload.id, folder),
        "instances_stored": upload.instances_stored,
        "transaction_id": upload.transaction_id,
        "error": upload.error,
        "sent_at": upload.sent_at.isoformat() + "Z" if upload.sent_at else None,
    }
