"""Searching the locator: an exact NHS number (modulus 11 checked) and the date of birth, with a reason from
the configured list. An entry whose date of birth differs (or is unknown) is never shown, so a mistyped
NHS number cannot reveal another patient's imaging. Visibility comes from imex.auth.scope."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.config import Config
from imex.db.models import LocatorEntry, utcnow
from imex.errors import Invalid
from imex.harmonise import nhs
from imex.locator.entries import series_of


class SearchRefused(Invalid, ValueError):
    """Input the locator does not search with; the message says what to correct."""


class SearchIncomplete(SearchRefused):
    """A part every search needs (date of birth, reason) is missing (FHIR answers it as `required`)."""


@dataclass(frozen=True)
class Criteria:
    nhs_number: str
    birth_date: str
    reason: str


def reasons(config: Config) -> list[str]:
    return [r.strip() for r in str(config["locator.reasons"]).split(",") if r.strip()]


def birth_date(value: str) -> str:
    """YYYYMMDD from YYYYMMDD or YYYY-MM-DD; SearchRefused when it is not a real date."""
    text = (value or "").strip().replace("-", "")
    try:
        day = dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise SearchRefused(f"the date of birth {value!r} is not a date (YYYY-MM-DD)") from None
    if day > utcnow().date():
        raise SearchRefused("the date of birth is in the future")
    return f"{day:%Y%m%d}"


def criteria(config: Config, nhs_number: str, birth: str, reason: str) -> Criteria:
    """Checked search input, or SearchRefused saying what is wrong."""
    problem = nhs.problem(nhs_number or "")
    if problem is not None:
        raise SearchRefused(f"not a valid NHS number: {problem}")
    if not (birth or "").strip():
        raise SearchIncomplete("the patient's date of birth is required")
    allowed = reasons(config)
    if not (reason or "").strip():
        raise SearchIncomplete(f"a reason for the search is required: one of {', '.join(allowed)}")
    match = next((r for r in allowed if r.lower() == reason.strip().lower()), None)
    if match is None:
        raise SearchRefused(f"{reason[:60]!r} is not an accepted reason; use one of {', '.join(allowed)}")
    return Criteria(nhs.normalise(nhs_number), birth_date(birth), match)


def age(seen: dt.datetime, now: dt.datetime | None = None) -> str:
    """How old an entry is, for people: `5 minutes`, `3 hours`, `12 days`."""
    seconds = max(int(((now or utcnow()) - seen).total_seconds()), 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "just now"


def viewable(entry: LocatorEntry) -> bool:
    """Whether the study can be retrieved for viewing: it is known by its UID, not only its accession."""
    return not entry.study_uid.startswith("acc:")


def result(entry: LocatorEntry, ods: str, name: str) -> dict[str, Any]:
    return {
        "id": entry.id,
        "institution": {"ods_code": ods, "name": name},
        "study_uid": entry.study_uid,
        "accession": entry.accession,
        "study_date": entry.study_date,
        "modalities": [m for m in entry.modalities.split("\\") if m],
        "description": entry.description,
        "body_part": [b for b in entry.body_part.split("\\") if b],
        "num_series": entry.num_series,
        "num_instances": entry.num_instances,
        "series": series_of(entry.series_json),
        "source": entry.source,
        "seen_at": entry.seen_at.isoformat() + "Z",
        "age": age(entry.seen_at),
        "viewable": viewable(entry),
    }


def search(s: Session | Connection, p: Principal, c: Criteria, via: str = "portal") -> list[tuple[LocatorEntry, Any]]:
    """(LocatorEntry, Institution) rows for the patient, newest first, and the search audited with its
    reason. The caller has checked the permission."""
    from imex.auth.scope import locator_query

    rows = s.execute(
        locator_query(p)
        .where(LocatorEntry.nhs_number == c.nhs_number, LocatorEntry.birth_date == c.birth_date)
        .order_by(LocatorEntry.study_date.desc(), LocatorEntry.study_time.desc())
    ).all()
    institutions = sorted({inst.ods_code for _, inst in rows})
    audit.record(
        s,
        "locator.search",
        patient_id=c.nhs_number,
        object_type="patient",
        object_id=c.nhs_number,
        detail=f"reason: {c.reason}; via {via}; {len(rows)} studies at {', '.join(institutions) or 'none'}",
        **p.audit_fields(),
    )
    return [(entry, inst) for entry, inst in rows]
