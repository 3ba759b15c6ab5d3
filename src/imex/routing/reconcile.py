"""Transfers held for reconciliation: a destination requires an NHS number the study lacks, so rather
than send a wrong identity the transfer waits (state `held`, which no worker claims) until a user enters
the patient ID and accession number to use. Those values are kept per transfer and applied when the
transfer is sent, on the copy that goes out; the stored study is never changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, or_, select, update

from imex.db import Database, utcnow
from imex.db.models import institutions, nodes, reconciliations, studies, transfers
from imex.errors import Conflict, Invalid
from imex.harmonise import nhs
from imex.jobs import engine
from imex.routing.queue import DELIVERY, record

HELD = "held"


class ReconcileError(Invalid, ValueError):
    """A reconciliation that cannot be made; the message says why."""


class NotHeld(ReconcileError, Conflict):
    """The transfer is not (or no longer) held for reconciliation: nothing to release."""


def hold(db: Database, transfer_id: int, worker: str, reason: str) -> bool:
    """Move a transfer this worker is sending to `held` with the reason; False if it no longer owns it.
    The attempt does not count: nothing was tried."""
    now = utcnow()
    with db.engine.begin() as conn:
        held = engine.finish(
            conn, DELIVERY, transfer_id, worker, HELD, attempts=transfers.c.attempts - 1, last_error=reason[:2000]
        )
        if not held:
            return False
        existing = conn.execute(
            select(reconciliations.c.id).where(reconciliations.c.transfer_id == transfer_id)
        ).scalar()
        values = dict(
            state="open",
            reason=reason,
            patient_id=None,
            issuer=None,
            accession_number=None,
            actor=None,
            resolved_at=None,
        )
        if existing is None:
            conn.execute(reconciliations.insert().values(transfer_id=transfer_id, created_at=now, **values))
        else:
            conn.execute(
                update(reconciliations).where(reconciliations.c.id == existing).values(created_at=now, **values)
            )
        record(conn, transfer_id, "held", f"needs reconciliation: {reason}")
    return True


def _check(value: str, limit: int, what: str) -> str:
    value = (value or "").strip()
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ReconcileError(f"{what} must not contain a backslash or control characters")
    if len(value) > limit:
        raise ReconcileError(f"{what} {value!r} is longer than {limit} characters")
    return value


def reconcile(
    db: Database, transfer_id: int, patient_id: str, accession: str | None, actor: str, issuer: str | None = None
) -> None:
    """Store the patient ID (and accession number) to send a held transfer with, and release it.

    The issuer defaults to NHS when the patient ID is a valid NHS number (it is normalised), else to the
    destination's ODS code: the ID was taken from its records."""
    patient_id = _check(patient_id, 64, "patient ID")
    if not patient_id:
        raise ReconcileError("a patient ID is needed to release the transfer")
    if accession is not None:
        accession = _check(accession, 16, "accession number")
    now = utcnow()
    with db.engine.begin() as conn:
        row = conn.execute(
            select(transfers.c.state, institutions.c.ods_code)
            .join(nodes, nodes.c.id == transfers.c.destination_node_id)
            .join(institutions, institutions.c.id == nodes.c.institution_id)
            .where(transfers.c.id == transfer_id)
        ).first()
        if row is None:
            raise ReconcileError(f"no transfer {transfer_id}")
        if row.state != HELD:
            raise NotHeld(f"transfer {transfer_id} is {row.state}, not held for reconciliation")
        if nhs.is_valid(patient_id):
            patient_id, default_issuer = nhs.normalise(patient_id), "NHS"
        else:
            default_issuer = row.ods_code
        values = dict(
            state="resolved",
            patient_id=patient_id,
            issuer=(issuer or default_issuer).strip()[:64],
            accession_number=accession,
            actor=actor[:128],
            resolved_at=now,
        )
        if (
            conn.execute(
                update(reconciliations).where(reconciliations.c.transfer_id == transfer_id).values(**values)
            ).rowcount
            == 0
        ):
            conn.execute(reconciliations.insert().values(transfer_id=transfer_id, created_at=now, reason="", **values))
        conn.execute(
            update(transfers)
            .where(transfers.c.id == transfer_id, transfers.c.state == HELD)
            .values(state="pending", next_attempt_at=now, last_error=None, updated_at=now)
        )
        what = "patient ID" + (" and accession number" if accession else "")
        record(
            conn,
            transfer_id,
            "reconciled",
            f"{actor} entered the {what} to send with (issuer {values['issuer']}); released",
        )


@dataclass(frozen=True)
class PendingReconciliation:
    """A held transfer as a list needs it (no patient identifiers beyond what the study row shows)."""

    transfer_id: int
    study_uid: str
    study_date: str
    modalities: str
    description: str
    accession_number: str
    source_ods: str
    destination_node: str
    destination_ods: str
    reason: str
    held_at: dt.datetime


def pending_reconciliations(conn: Connection, institution_id: int | None = None) -> list[PendingReconciliation]:
    """Held transfers, oldest first; with an institution, those it sends or receives."""
    source = institutions.alias("source")
    dest = institutions.alias("dest")
    query = (
        select(
            transfers.c.id,
            studies.c.study_uid,
            studies.c.study_date,
            studies.c.modalities,
            studies.c.description,
            studies.c.accession_number,
            source.c.ods_code.label("source_ods"),
            nodes.c.name.label("node"),
            dest.c.ods_code.label("dest_ods"),
            reconciliations.c.reason,
            reconciliations.c.created_at,
        )
        .join(studies, studies.c.id == transfers.c.study_id)
        .join(source, source.c.id == studies.c.institution_id)
        .join(nodes, nodes.c.id == transfers.c.destination_node_id)
        .join(dest, dest.c.id == nodes.c.institution_id)
        .join(reconciliations, reconciliations.c.transfer_id == transfers.c.id)
        .where(transfers.c.state == HELD, reconciliations.c.state == "open")
        .order_by(reconciliations.c.created_at, transfers.c.id)
    )
    if institution_id is not None:
        query = query.where(or_(studies.c.institution_id == institution_id, nodes.c.institution_id == institution_id))
    return [
        PendingReconciliation(
            r.id,
            r.study_uid,
            r.study_date,
            r.modalities,
            r.description,
            r.accession_number,
            r.source_ods,
            r.node,
            r.dest_ods,
            r.reason,
            r.created_at,
        )
        for r in conn.execute(query).all()
    ]
