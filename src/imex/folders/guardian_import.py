"""Flow 5's last step: a PACS guardian imports a study shared with their institution into its local PACS.
First they look the patient up in that PACS (C-FIND by patient ID or NHS number); then they confirm the
local identity, and the study is queued to the PACS with a resolved reconciliation, so harmonisation
sends it under the local patient ID (and accession number) instead of the sender's.

The caller has checked that the study is visible to the guardian."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.config import Config
from imex.db.models import Node, Patient, Reconciliation, Study, Transfer, utcnow
from imex.dicom.find import FindFailed, LocalPatient, find_patients
from imex.errors import Conflict, Invalid, NotFound
from imex.harmonise import nhs
from imex.routing.queue import queue_study


def _local_nodes(institution_id: int) -> Select:
    """The institution's enabled nodes that receive: where an import can go."""
    return select(Node).where(Node.institution_id == institution_id, Node.destination.is_(True), Node.enabled.is_(True))


def pacs_for_import(s: Session, institution_id: int, node_id: int | None) -> Node | None:
    """The PACS to import into: the node asked for when it is one of the institution's enabled destination
    nodes (None when it is not: the caller answers that as not found), else the institution's only one.
    Invalid when none was asked for and the institution has none or several."""
    if node_id is not None:
        return s.scalar(_local_nodes(institution_id).where(Node.id == node_id))
    found = s.scalars(_local_nodes(institution_id).order_by(Node.name)).all()
    if len(found) != 1:
        raise Invalid(
            f"choose the PACS to import into (node_id): your institution has {len(found) or 'no'} destination nodes"
        )
    return found[0]


def _study(s: Session, study_id: int) -> tuple[Study, Patient]:
    row = s.execute(
        select(Study, Patient).join(Patient, Patient.id == Study.patient_pk).where(Study.id == study_id)
    ).first()
    if row is None:
        raise NotFound(f"no study {study_id}")
    return row[0], row[1]


@dataclass(frozen=True)
class LocalLookup:
    searched_for: str
    local_patients: list[LocalPatient]
    problem: str  # why the PACS could not be searched; empty when it answered


def look_up_patient(
    s: Session, config: Config, study_id: int, node: Node, search: str, actor: Principal
) -> LocalLookup:
    """The local PACS's patients with the ID searched for (default: the study's patient ID, normalised when
    it is an NHS number); audited. A PACS that cannot be searched is reported, not raised: the guardian
    may still import under an ID from the RIS. Ends the session's transaction first: on SQLite it holds
    the write lock, and the PACS may take its time."""
    study, patient = _study(s, study_id)
    wanted = search.strip() or (
        nhs.normalise(patient.patient_id) if nhs.is_valid(patient.patient_id) else patient.patient_id
    )
    study_uid, patient_id, ae_title, host, port, node_name = (
        study.study_uid,
        patient.patient_id,
        node.ae_title,
        node.host,
        node.port,
        node.name,
    )
    s.commit()
    try:
        local = find_patients(config["dicom.ae_title"], ae_title, host, port, wanted)
        problem = ""
    except FindFailed as exc:
        local, problem = [], str(exc)
    audit.record(
        s,
        "search",
        study_uid=study_uid,
        patient_id=patient_id,
        object_type="node",
        object_id=node_name,
        detail=f"local PACS query for {wanted!r} before import: {len(local)} found",
        **actor.audit_fields(),
    )
    return LocalLookup(wanted, local, problem)


@dataclass(frozen=True)
class Imported:
    transfer_id: int
    node: str
    patient_id: str
    issuer: str


def import_study(
    s: Session, study_id: int, node: Node, patient_id: str, accession_number: str | None, actor: Principal
) -> Imported:
    """Queue the study to the local PACS `node` under the local identity the guardian confirmed (an NHS
    number, or the institution's own patient ID), with its reconciliation already resolved; audited.
    Conflict when the study was sent to that PACS before."""
    study, patient = _study(s, study_id)
    earlier = s.scalar(
        select(Transfer.id).where(Transfer.study_id == study.id, Transfer.destination_node_id == node.id)
    )
    if earlier is not None:
        raise Conflict(f"this study was already sent to {node.name} (transfer {earlier})")
    local_id = patient_id.strip()
    issuer = "NHS" if nhs.is_valid(local_id) else actor.institution_ods
    local_id = nhs.normalise(local_id) if issuer == "NHS" else local_id
    [transfer_id] = queue_study(s.connection(), study.id, {node.id: f"import by {actor.username}"})
    s.add(
        Reconciliation(
            transfer_id=transfer_id,
            state="resolved",
            reason="import into the local PACS",
            patient_id=local_id,
            issuer=issuer,
            accession_number=(accession_number or None),
            actor=actor.username,
            created_at=utcnow(),
            resolved_at=utcnow(),
        )
    )
    audit.record(
        s,
        "study.import",
        study_uid=study.study_uid,
        patient_id=patient.patient_id,
        object_type="transfer",
        object_id=transfer_id,
        detail=f"into {node.name} as patient {local_id} ({issuer})"
        + (f", accession {accession_number}" if accession_number else ""),
        **actor.audit_fields(),
    )
    return Imported(transfer_id, node.name, local_id, issuer)
