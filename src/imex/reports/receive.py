"""Receiving a report: check who sent it, store it, mark earlier versions superseded, attach it to its
study (by accession number and patient identity, or the study UID of a ZDS segment), and queue its
delivery to every destination that already has the study. Everything for one message happens in one
transaction, so a bad message or a crash leaves nothing half-stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydicom.uid import generate_uid
from sqlalchemy import Connection, and_, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from imex import events
from imex.db import Database, utcnow
from imex.db.models import (
    nodes,
    patients,
    report_deliveries,
    reports,
    studies,
    transfers,
)
from imex.hl7.build import Outcome, ack
from imex.hl7.parse import HL7Error, HL7Reject, Report, parse_oru, read_header
from imex.logsafe import printable
from imex.reports.endpoints import endpoint_for_institution, find_sender

log = logging.getLogger("imex.hl7")


def _norm(value: str) -> str:
    return value.replace(" ", "").replace("-", "").strip().upper()


def receive(
    db: Database, data: bytes, peer: str, *, source: str = "push", expected_institution: int | None = None
) -> Outcome:
    """Decide and store one message from `peer`; the caller turns the outcome into an ACK."""
    try:
        header = read_header(data)
    except HL7Reject as exc:
        return Outcome("AR", str(exc), "100")
    try:
        report = parse_oru(data, allow_query_response=source == "query")
    except HL7Reject as exc:
        code = "203" if "version" in str(exc) else "200" if "type" in str(exc) else "102"
        return Outcome("AR", str(exc), code, header)
    except HL7Error as exc:
        return Outcome("AE", str(exc), exc.code, header)
    with db.engine.begin() as conn:
        if expected_institution is not None:
            institution_id, endpoint_id = expected_institution, None
        else:
            sender = find_sender(conn, header.sending_facility, peer)
            if sender is None:
                return Outcome(
                    "AE",
                    f"sending facility {header.sending_facility or '(empty)'} at {peer} is not "
                    "a registered RIS endpoint of imex; ask the hub's administrator to add it "
                    "([[ris]] in imex.toml)",
                    "204",
                    header,
                )
            institution_id, endpoint_id = sender.institution_id, sender.id
        control = header.control_id or generate_uid()
        existing = conn.execute(
            select(reports.c.id).where(reports.c.institution_id == institution_id, reports.c.control_id == control[:64])
        ).first()
        if existing is not None:
            return Outcome("AA", "already received", header=header, report_id=existing.id)
        report_id = _insert(conn, report, data, institution_id, endpoint_id, control, source)
    log.info(
        "report %s (%s, accession %s) received from %s",
        report_id,
        printable(report.status),
        printable(report.accession_number),
        printable(header.sending_facility),
    )
    return Outcome("AA", "", header=header, report_id=report_id)


def _insert(
    conn: Connection,
    report: Report,
    data: bytes,
    institution_id: int,
    endpoint_id: int | None,
    control: str,
    source: str,
) -> int:
    ids = " ".join(dict.fromkeys(_norm(i.value) for i in report.identifiers))
    report_id = conn.execute(
        insert(reports)
        .values(
            institution_id=institution_id,
            ris_endpoint_id=endpoint_id,
            control_id=control[:64],
            hl7_version=report.header.version[:8],
            accession_number=report.accession_number,
            patient_id=report.patient_id[:64],
            identifiers=ids,
            nhs_number=report.nhs_number[:16],
            patient_name=report.patient_name[:320],
            birth_date=report.birth_date,
            sex=report.sex,
            study_uid=report.study_uid,
            procedure=report.procedure[:200],
            status=report.status,
            clinician=report.clinician,
            observed_at=report.observed_at,
            text=report.text,
            raw=data.decode("utf-8", errors="replace"),
            source=source,
            sop_instance_uid=generate_uid(),
            received_at=utcnow(),
        )
        .returning(reports.c.id)
    ).scalar_one()
    # earlier versions of the same report are superseded, and whatever of them was not yet sent is not sent
    older = (
        conn.execute(
            select(reports.c.id).where(
                reports.c.institution_id == institution_id,
                reports.c.accession_number == report.accession_number,
                reports.c.id != report_id,
                reports.c.superseded_by.is_(None),
            )
        )
        .scalars()
        .all()
    )
    if older:
        conn.execute(update(reports).where(reports.c.id.in_(older)).values(superseded_by=report_id))
        conn.execute(
            update(report_deliveries)
            .where(report_deliveries.c.report_id.in_(older), report_deliveries.c.state == "pending")
            .values(state="cancelled", last_error="superseded by a newer version before it was sent")
        )
    study_id = find_study(conn, report_id)
    if study_id is not None:
        attach(conn, report_id, study_id)
    return report_id


def find_study(conn: Connection, report_id: int) -> int | None:
    """The study a report belongs to: same institution and the ZDS study UID, or the same accession number
    with a patient whose ID is one of the report's identifiers. None while no such study is indexed."""
    r = conn.execute(select(reports).where(reports.c.id == report_id)).one()
    query = (
        select(studies.c.id, patients.c.patient_id)
        .join(patients, patients.c.id == studies.c.patient_pk)
        .where(studies.c.institution_id == r.institution_id)
    )
    if r.study_uid:
        query = query.where(studies.c.study_uid == r.study_uid)
    else:
        query = query.where(studies.c.accession_number == r.accession_number)
    ids = set(r.identifiers.split())
    for row in conn.execute(query.order_by(studies.c.id.desc())).all():
        if _norm(row.patient_id) in ids:
            return int(row.id)
        log.warning(
            "report %s: accession %s matches study %s, but its patient ID is not among the report's "
            "identifiers; not attached",
            report_id,
            printable(r.accession_number),
            row.id,
        )
    return None


def attach(conn: Connection, report_id: int, study_id: int) -> None:
    conn.execute(update(reports).where(reports.c.id == report_id).values(study_id=study_id, matched_at=utcnow()))
    queue_deliveries(conn, study_id)


def match_waiting(db: Database, limit: int = 200) -> int:
    """Attach reports that arrived before their study, now that the study may be indexed (called by the
    hub's housekeeping loop). Returns how many were attached."""
    with db.reader() as conn:
        # the patient test is in SQL too, so a report whose accession names another patient's study is not
        # looked at again on every round
        patient_matches = (literal(" ") + reports.c.identifiers + literal(" ")).like(
            literal("% ") + func.upper(func.replace(patients.c.patient_id, " ", "")) + literal(" %")
        )
        waiting = (
            conn.execute(
                select(reports.c.id)
                .where(reports.c.study_id.is_(None), reports.c.superseded_by.is_(None))
                .where(
                    select(studies.c.id)
                    .join(patients, patients.c.id == studies.c.patient_pk)
                    .where(
                        studies.c.institution_id == reports.c.institution_id,
                        patient_matches,
                        (studies.c.accession_number == reports.c.accession_number)
                        | and_(reports.c.study_uid != "", studies.c.study_uid == reports.c.study_uid),
                    )
                    .exists()
                )
                .order_by(reports.c.id)
                .limit(limit)
            )
            .scalars()
            .all()
        )
        conn.rollback()
    attached = 0
    for report_id in waiting:
        with db.engine.begin() as conn:
            study_id = find_study(conn, report_id)
            if study_id is not None:
                # earlier versions attach too, so the study's history is complete
                r = conn.execute(
                    select(reports.c.institution_id, reports.c.accession_number).where(reports.c.id == report_id)
                ).one()
                conn.execute(
                    update(reports)
                    .where(
                        reports.c.institution_id == r.institution_id,
                        reports.c.accession_number == r.accession_number,
                        reports.c.study_id.is_(None),
                    )
                    .values(study_id=study_id, matched_at=utcnow())
                )
                queue_deliveries(conn, study_id)
                attached += 1
    return attached


def _insert_ignore(conn: Connection, values: dict) -> None:
    dialect = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect(report_deliveries).values(**values).on_conflict_do_nothing())


def queue_deliveries(conn: Connection, study_id: int) -> int:
    """Queue the current report of a study to every destination its images were delivered to: as DICOM to
    the node, and as HL7 to the RIS of the node's institution when it has one. Idempotent."""
    current = (
        conn.execute(select(reports.c.id).where(reports.c.study_id == study_id, reports.c.superseded_by.is_(None)))
        .scalars()
        .all()
    )
    if not current:
        return 0
    destinations = conn.execute(
        select(nodes.c.id, nodes.c.institution_id)
        .join(transfers, transfers.c.destination_node_id == nodes.c.id)
        .where(transfers.c.study_id == study_id, transfers.c.state.in_(("delivered", "confirmed")))
    ).all()
    queued = 0
    now = utcnow()
    for report_id in current:
        for dest in destinations:
            kinds = ["dicom"]
            if endpoint_for_institution(conn, dest.institution_id) is not None:
                kinds.append("hl7")
            for kind in kinds:
                _insert_ignore(
                    conn,
                    dict(
                        report_id=report_id,
                        destination_node_id=dest.id,
                        kind=kind,
                        state="pending",
                        attempts=0,
                        next_attempt_at=now,
                        supersedes="",
                        message_id="",
                        created_at=now,
                    ),
                )
                queued += 1
    return queued


@events.on("transfer.delivered")
def queue_for_transfer(conn: Connection, transfer_id: int, announce: bool = True) -> None:
    """A study was delivered, so its report follows it (the first delivery only: a re-send after a
    confirmation round was preceded by its report)."""
    if not announce:
        return
    study_id = conn.execute(select(transfers.c.study_id).where(transfers.c.id == transfer_id)).scalar_one()
    queue_deliveries(conn, study_id)


def handler(db: Database, on_report: Callable[[], None] | None = None) -> Callable[[bytes, str], bytes]:
    """The MLLP listener's handler: the ACK for one message; `on_report()` is called after a report was
    stored (to wake the report sender). Messages another flow answers (study notifications for the
    locator) are theirs through the `hl7.received` hook; a stored report is announced as
    `report.received`."""

    def handle(data: bytes, peer: str) -> bytes:
        other = events.first("hl7.received", None, db=db, data=data, peer=peer)
        if other is not None:
            return ack(other.header, other.code, other.text, other.error_code)
        outcome = receive(db, data, peer)
        if outcome.code != "AA":
            log.warning("HL7 message from %s answered %s: %s", peer, outcome.code, printable(outcome.text))
        else:
            if outcome.report_id is not None:
                with db.engine.begin() as conn:
                    events.emit("report.received", conn, report_id=outcome.report_id)
            if on_report is not None:
                on_report()
        return ack(outcome.header, outcome.code, outcome.text, outcome.error_code)

    return handle
