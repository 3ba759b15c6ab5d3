"""Writing locator entries: one row per (institution, study), rewritten each time a feed tells of the study
again, and removed when its institution leaves the network."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, exists, not_, select
from sqlalchemy.dialects import postgresql, sqlite

from imex.db.models import Node, locator_entries, utcnow
from imex.harmonise import nhs

ENTRIES = locator_entries


@dataclass
class Holding:
    """What a feed knows of one study an institution holds. `series` items: uid, modality, number,
    description, body_part, instances. Counts of 0 with no series mean "not known"."""

    institution_id: int
    nhs_number: str
    study_uid: str
    source: str
    birth_date: str = ""
    patient_id: str = ""
    accession: str = ""
    study_date: str = ""
    study_time: str = ""
    modalities: tuple[str, ...] = ()
    description: str = ""
    body_parts: tuple[str, ...] = ()
    num_series: int = 0
    num_instances: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)
    node_id: int | None = None


def nhs_number_of(patient_id: str, issuer: str = "", other_ids: tuple[str, ...] = ()) -> str | None:
    """The valid NHS number among a patient's identifiers: the Patient ID when its issuer says NHS (or says
    nothing), else a valid Other Patient ID. None when there is none, so nothing is indexed under a guess."""
    if patient_id and (nhs.is_nhs_issuer(issuer) or not issuer) and nhs.is_valid(patient_id):
        return nhs.normalise(patient_id)
    for other in other_ids:
        if nhs.is_valid(other):
            return nhs.normalise(other)
    return None


def _joined(values: tuple[str, ...] | list[str], limit: int) -> str:
    return "\\".join(dict.fromkeys(v.strip() for v in values if v and v.strip()))[:limit]


def upsert(conn: Connection, h: Holding) -> None:
    """Insert or refresh the entry for (institution, study). What the feed does not know (no counts, no
    series) does not wipe what an earlier feed knew."""
    now = utcnow()
    series_json = json.dumps(h.series, separators=(",", ":")) if h.series else ""
    values: dict[str, Any] = dict(
        institution_id=h.institution_id,
        node_id=h.node_id,
        nhs_number=h.nhs_number,
        birth_date=h.birth_date[:8],
        patient_id=h.patient_id[:64],
        study_uid=h.study_uid[:64],
        accession=h.accession[:64],
        study_date=h.study_date[:8],
        study_time=h.study_time[:32],
        modalities=_joined(h.modalities, 128),
        description=h.description[:200],
        body_part=_joined(h.body_parts, 128),
        num_series=h.num_series,
        num_instances=h.num_instances,
        series_json=series_json,
        source=h.source,
        first_seen_at=now,
        seen_at=now,
    )
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(ENTRIES).values(**values)
    changes = {k: statement.excluded[k] for k in values if k not in ("institution_id", "study_uid", "first_seen_at")}
    keep_if_unknown = {
        "num_series": h.num_series == 0,
        "num_instances": h.num_instances == 0,
        "series_json": not series_json,
        "node_id": h.node_id is None,
        "body_part": not h.body_parts,
        "modalities": not h.modalities,
        "description": not h.description,
        "accession": not h.accession,
        "study_date": not h.study_date,
        "study_time": not h.study_time,
        "patient_id": not h.patient_id,
        "birth_date": not h.birth_date,
    }
    for key, keep in keep_if_unknown.items():
        if keep:
            changes.pop(key)
    conn.execute(statement.on_conflict_do_update(index_elements=["institution_id", "study_uid"], set_=changes))


def remove_departed(conn: Connection) -> int:
    """Delete the entries of institutions that left the network: every node of theirs disabled or removed
    (entries of a removed institution go with it, by foreign key)."""
    active = exists(select(Node.id).where(Node.institution_id == ENTRIES.c.institution_id, Node.enabled.is_(True)))
    return conn.execute(delete(ENTRIES).where(not_(active))).rowcount or 0


def series_of(entry_series_json: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(entry_series_json) if entry_series_json else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []
