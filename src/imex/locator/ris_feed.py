"""Feed (c): study notifications from a RIS over HL7 v2. An ORM^O01 or OMI^O23 whose order is completed
(ORC-5 `CM`, or OBR-25 `F`/`C`) tells the locator that the sending RIS's institution holds the study; a
report (ORU^R01, stored by imex.hl7) tells it too. The study is known by its Study Instance UID (ZDS-1, or
IPC-3 of an OMI) when the RIS sends it, otherwise by its accession number (then it can be found, and
requested, but not viewed before a sweep or the hub sees its UID)."""

from __future__ import annotations

import logging

import hl7
from hl7.exceptions import ParseException
from sqlalchemy import Connection, select

from imex import events
from imex.db import Database
from imex.db.models import reports, studies
from imex.hl7.build import Outcome
from imex.hl7.parse import SUPPORTED_VERSIONS, HL7Reject, Reader, decode, normalise_segments, parse_time, read_header
from imex.locator.entries import Holding, nhs_number_of, upsert
from imex.logsafe import printable
from imex.reports.endpoints import find_sender

log = logging.getLogger("imex.locator.ris_feed")
ORDER_TYPES = ("ORM", "OMI")
COMPLETED_ORDER = ("CM",)
COMPLETED_RESULT = ("F", "C")


def is_notification(data: bytes) -> bool:
    """Whether the message is an order message this module answers (the HL7 listener asks first)."""
    try:
        return read_header(data).message_type.split("^")[0] in ORDER_TYPES
    except HL7Reject:
        return False


def _key(study_uid: str, accession: str) -> str:
    """What identifies the study in the index: its UID, or `acc:` and the accession number."""
    return study_uid[:64] if study_uid else f"acc:{accession}"[:64]


@events.on("hl7.received")
def answer(conn: None, *, db: Database, data: bytes, peer: str) -> Outcome | None:
    """The HL7 listener's hook: the outcome for an order notification, None for any other message."""
    return receive(db, data, peer) if is_notification(data) else None


def receive(db: Database, data: bytes, peer: str) -> Outcome:
    """Index one order notification from a registered RIS; the outcome becomes the ACK."""
    try:
        header = read_header(data)
    except HL7Reject as exc:
        return Outcome("AR", str(exc), "100")
    if header.version not in SUPPORTED_VERSIONS:
        return Outcome("AR", f"HL7 version {header.version or '(empty)'} is not supported", "203", header)
    try:
        message = hl7.parse(normalise_segments(decode(data)))
    except (ParseException, IndexError, ValueError) as exc:
        return Outcome("AR", f"the message cannot be parsed: {exc}", "102", header)
    r = Reader(message)
    present = {str(seg[0]) for seg in message}
    if "PID" not in present or "OBR" not in present:
        return Outcome("AE", "an order notification needs PID and OBR segments", "100", header)
    pid, obr = message.segment("PID"), message.segment("OBR")
    orc = message.segment("ORC") if "ORC" in present else None
    status = r.first(orc, 5).upper() if orc is not None else ""
    if status not in COMPLETED_ORDER and r.first(obr, 25).upper() not in COMPLETED_RESULT:
        return Outcome("AA", "not completed: nothing to index", header=header)
    number, others = "", []
    for rep in r.reps(pid, 3):
        value = rep[0].strip() if rep else ""
        authority = rep[3].strip().upper() if len(rep) > 3 else ""
        type_code = rep[4].strip().upper() if len(rep) > 4 else ""
        if value and (authority == "NHS" or type_code == "NH"):
            number = nhs_number_of(value, "NHS") or number
        elif value:
            others.append(value)
    if not number:
        return Outcome("AA", "no valid NHS number in PID-3: not indexed", header=header)
    ipc = message.segment("IPC") if "IPC" in present else None
    study_uid = next((r.first(seg, 1) for seg in message if str(seg[0]) == "ZDS"), "")
    if not study_uid and ipc is not None:
        study_uid = r.first(ipc, 3)
    accession = (r.first(ipc, 1) if ipc is not None else "") or r.first(obr, 18) or r.first(obr, 3) or r.first(obr, 2)
    if not study_uid and not accession:
        return Outcome("AE", "the notification names no study (ZDS-1, IPC-3) and no accession number", "101", header)
    when = parse_time(r.first(obr, 7)) or parse_time(r.first(obr, 22))
    modality = (r.first(ipc, 5) if ipc is not None else "") or r.first(obr, 24)
    with db.engine.begin() as conn:
        sender = find_sender(conn, header.sending_facility, peer)
        if sender is None:
            return Outcome(
                "AE",
                f"sending facility {header.sending_facility or '(empty)'} at {peer} is not a "
                "registered RIS endpoint of imex",
                "204",
                header,
            )
        upsert(
            conn,
            Holding(
                institution_id=sender.institution_id,
                nhs_number=number,
                study_uid=_key(study_uid, accession),
                source="hl7",
                birth_date=r.first(pid, 7)[:8],
                patient_id=(others or [number])[0],
                accession=accession,
                study_date=f"{when:%Y%m%d}" if when else "",
                study_time=f"{when:%H%M%S}" if when else "",
                modalities=(modality,) if modality else (),
                description=r.first(obr, 4, 1) or r.first(obr, 4),
            ),
        )
    log.info("locator: %s notified study %s", printable(header.sending_facility), printable(study_uid or accession))
    return Outcome("AA", "indexed", header=header)


@events.on("report.received")
def index_report(conn: Connection, report_id: int) -> None:
    """A report the HL7 listener stored also tells the locator its institution holds the study."""
    rep = conn.execute(select(reports).where(reports.c.id == report_id)).first()
    if rep is None:
        return
    number = nhs_number_of(rep.nhs_number, "NHS") if rep.nhs_number else None
    if number is None:
        return
    uid = rep.study_uid
    if not uid and rep.study_id is not None:
        uid = conn.execute(select(studies.c.study_uid).where(studies.c.id == rep.study_id)).scalar() or ""
    upsert(
        conn,
        Holding(
            institution_id=rep.institution_id,
            nhs_number=number,
            study_uid=_key(uid, rep.accession_number),
            source="hl7",
            birth_date=rep.birth_date,
            patient_id=rep.patient_id,
            accession=rep.accession_number,
            study_date=f"{rep.observed_at:%Y%m%d}" if rep.observed_at else "",
            description=rep.procedure[:200],
        ),
    )
