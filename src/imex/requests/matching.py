"""Whether an arriving study is what an image request asked for: pure functions, so the rules can be
read and tested without a hub.

A study matches when it is the same patient (NHS number as Patient ID or in Other Patient IDs, or name
and date of birth, both exact after normalising) or the very study asked for (accession number or Study
Instance UID), and it lies within the request's modality and date range. Names are compared as their
components in DICOM order (family^given^middle), case and punctuation ignored, never fuzzily: a wrong
patient's images must never be sent on.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from imex.harmonise import nhs

_NOT_NAME = re.compile(r"[^A-Z0-9]+")


def normalise_name(value: str) -> str:
    """`Doe^Jane`, `DOE^JANE^^`, `doe ^ jane` -> `DOE^JANE`; a name without carets keeps its words in order."""
    text = str(value or "").upper()
    parts = [_NOT_NAME.sub(" ", part).strip() for part in text.split("^")]
    parts = [" ".join(p.split()) for p in parts]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def valid_date(value: str) -> bool:
    """YYYYMMDD that is a real calendar date."""
    if not (len(value) == 8 and value.isdigit()):
        return False
    try:
        dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Wanted:
    """What a request asks for (the columns of image_requests that matter for matching)."""

    nhs_number: str = ""
    patient_name: str = ""
    birth_date: str = ""
    accession: str = ""
    study_uid: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""


@dataclass(frozen=True)
class Arrival:
    """What the hub knows of an arriving study."""

    study_uid: str
    patient_id: str = ""
    issuer: str = ""
    other_patient_ids: tuple[str, ...] = field(default=())
    patient_name: str = ""
    birth_date: str = ""
    accession: str = ""
    modalities: tuple[str, ...] = field(default=())
    study_date: str = ""


def within(wanted: Wanted, arrival: Arrival) -> bool:
    """The study is of the modality and in the date range asked for (an unknown study date is not)."""
    if wanted.modality and wanted.modality.upper() not in {m.upper() for m in arrival.modalities}:
        return False
    if wanted.date_from or wanted.date_to:
        if not valid_date(arrival.study_date):
            return False
        if wanted.date_from and arrival.study_date < wanted.date_from:
            return False
        if wanted.date_to and arrival.study_date > wanted.date_to:
            return False
    return True


def same_patient_by_nhs(wanted: Wanted, arrival: Arrival) -> bool:
    number = nhs.normalise(wanted.nhs_number)
    if not number or not nhs.is_valid(number):
        return False
    ids = [arrival.patient_id] if (not arrival.issuer or nhs.is_nhs_issuer(arrival.issuer)) else []
    ids += list(arrival.other_patient_ids)
    return any(nhs.normalise(i) == number for i in ids if i)


def match_reason(wanted: Wanted, arrival: Arrival) -> str | None:
    """Why the arrival fulfils the request ("NHS number", "study UID", ...), or None when it does not."""
    if not within(wanted, arrival):
        return None
    if wanted.study_uid and wanted.study_uid == arrival.study_uid:
        return "study UID"
    if wanted.accession and wanted.accession.strip() == arrival.accession.strip():
        return "accession number"
    if same_patient_by_nhs(wanted, arrival):
        return "NHS number"
    name = normalise_name(wanted.patient_name)
    if (
        name
        and wanted.birth_date
        and name == normalise_name(arrival.patient_name)
        and wanted.birth_date == arrival.birth_date
    ):
        return "name and date of birth"
    return None
