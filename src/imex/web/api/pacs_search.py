"""Searching one's own institution's PACS through the hub (C-FIND, study then series level) and sending
what was found as a pre-authorised transfer: one transaction, a retrieval (C-MOVE to the hub) per study;
the router hook sends each study on when it arrives. Only nodes of the user's institution with
query/retrieve on may be searched (another's is 404, audited); every search is audited."""
from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Institution, Node, User
from imex.dicom.query import FindFailed, NodeAddress, StudyQuery, find_series, find_studies
from imex.exchanges import messages, retrievals
from imex.exchanges.transactions import TransactionError, open_transaction
from imex.auth import scope
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem
from imex.routing import priority as priorities

router = APIRouter(prefix="/api/v1/pacs", tags=["exchanges"])
_DATE = re.compile(r"^\d{8}$")
_UID = re.compile(r"^[0-9.]{1,64}$")


def searchable_node(s: Session, p: Principal, node_id: int) -> Node:
    p.require("studies.send")
    return visible_or_deny(s, p, s.scalar(scope.searchable_nodes_query(p).where(Node.id == node_id)), "node", node_id,
                           "searchable PACS")


@router.get("/nodes", summary="The PACS nodes of your institution the hub may search")
def list_nodes(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    p.require("studies.send")
    return [{"id": n.id, "name": n.name, "ae_title": n.ae_title} for n in s.scalars(
        scope.searchable_nodes_query(p).order_by(Node.name))]


def _date(value: str, name: str) -> str:
    value = value.replace("-", "").strip()
    if value and not _DATE.match(value):
        raise Problem(422, f"{name} must be a date (YYYY-MM-DD or YYYYMMDD), not {value[:20]!r}")
    return value


class SearchFields:
    """The search's fields, also accepted as URL query parameters by the search page (pre-filled)."""

    def __init__(self, patient_id: str = Query("", max_length=64, description="Patient ID or NHS number"),
                 patient_name: str = Query("", max_length=64, description="Name, DICOM style (DOE^JANE); * allowed"),
                 birth_date: str = Query("", max_length=10), accession: str = Query("", max_length=16),
                 modality: str = Query("", max_length=16), date_from: str = Query("", max_length=10),
                 date_to: str = Query("", max_length=10),
                 study_uid: str = Query("", max_length=64)) -> None:
        self.query = StudyQuery(patient_id=patient_id.replace(" ", "").strip(), patient_name=patient_name.strip(),
                                birth_date=_date(birth_date, "birth_date"), accession=accession.strip(),
                                modality=modality.strip().upper(), date_from=_date(date_from, "date_from"),
                                date_to=_date(date_to, "date_to"), study_uid=study_uid.strip())

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self.query).items() if v)[:500]


def _address(node: Node) -> NodeAddress:
    return NodeAddress(node.ae_title, node.host, node.port)


@router.get("/{node_id}/studies", summary="Search a PACS of your institution (C-FIND, study level)")
def search_studies(node_id: ObjectId, fields: SearchFields = Depends(), p: Principal = Depends(signed_in),
                   pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    node = searchable_node(s, p, node_id)
    if fields.query.is_empty():
        raise Problem(422, "say what to search for: a patient ID or NHS number, name, date of birth, accession "
                           "number, modality or dates")
    address = _address(node)
    s.commit()
    try:
        found = find_studies(pt.config["dicom.ae_title"], address, fields.query,
                             timeout=pt.config["exchange.search_timeout_seconds"], limit=200)
    except FindFailed as exc:
        audit.record(s, "pacs.search", outcome="failure", object_type="node", object_id=node.id,
                     detail=f"{fields.describe()}: {exc}"[:4000], **p.audit_fields())
        s.commit()
        raise Problem(502, f"the search of {node.name} failed: {exc}") from None
    audit.record(s, "pacs.search", object_type="node", object_id=node.id,
                 patient_id=fields.query.patient_id, detail=f"{fields.describe()}: {len(found)} studies",
                 **p.audit_fields())
    return {"node": node.name, "items": [
        {"study_uid": m.study_uid, "patient_id": m.patient_id, "patient_name": m.patient_name,
         "birth_date": m.birth_date, "sex": m.sex, "accession": m.accession, "study_date": m.study_date,
         "description": m.description, "modalities": list(m.modalities), "series": m.series_count,
         "images": m.instance_count} for m in found]}


@router.get("/{node_id}/studies/{study_uid}/series", summary="The series of one study on a PACS of your institution")
def search_series(node_id: ObjectId, study_uid: str, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                  s: Session = Depends(db_session)) -> dict[str, Any]:
    node = searchable_node(s, p, node_id)
    if not _UID.match(study_uid):
        raise Problem(422, "a study instance UID is digits and dots, at most 64 characters")
    address = _address(node)
    s.commit()
    try:
        found = find_series(pt.config["dicom.ae_title"], address, study_uid,
                            timeout=pt.config["exchange.search_timeout_seconds"])
    except FindFailed as exc:
        raise Problem(502, f"the search of {node.name} failed: {exc}") from None
    audit.record(s, "pacs.search", object_type="node", object_id=node.id, study_uid=study_uid,
                 detail=f"series of study: {len(found)} series", **p.audit_fields())
    return {"study_uid": study_uid, "items": [
        {"series_uid": x.series_uid, "modality": x.modality, "number": x.number, "description": x.description,
         "body_part": x.body_part, "images": x.instance_count} for x in found]}


class SendIn(BaseModel):
    study_uids: list[str] = Field(..., min_length=1, max_length=50)
    destination: str = Field(..., min_length=1, max_length=16, description="The destination institution's ODS code")
    priority: str = Field("routine", description="routine, urgent or emergency")
    recipient: str = Field("", max_length=200, description="Who the images are for (free text)")
    recipient_user: str = Field("", max_length=64, description="A destination user's username, told directly")
    subject: str = Field("", max_length=200)
    message: str = Field("", max_length=messages.MAX_BODY)


@router.post("/{node_id}/send", status_code=201,
             summary="Send studies from a PACS of your institution: one pre-authorised exchange, retrieved by C-MOVE")
def send_studies(node_id: ObjectId, body: SendIn, p: Principal = Depends(signed_in),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    node = searchable_node(s, p, node_id)
    uids = list(dict.fromkeys(u.strip() for u in body.study_uids))
    bad = [u for u in uids if not _UID.match(u)]
    if bad:
        raise Problem(422, f"not a study instance UID: {bad[0][:70]!r}")
    try:
        level = priorities.parse(body.priority)
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    dest = s.scalar(select(Institution).where(Institution.ods_code == body.destination.strip().upper()))
    if dest is None:
        raise Problem(422, f"no institution {body.destination[:16]!r}")
    if dest.id == node.institution_id:
        raise Problem(422, "choose another institution to send to")
    recipient_user_id = None
    if body.recipient_user.strip():
        recipient_user_id = s.scalar(select(User.id).where(User.username == body.recipient_user.strip(),
                                                           User.institution_id == dest.id))
        if recipient_user_id is None:
            raise Problem(422, f"{dest.ods_code} has no user {body.recipient_user[:64]!r}")
    conn = s.connection()
    try:
        tid = open_transaction(conn, kind="preauthorised", source_institution_id=node.institution_id,
                               destination_institution_id=dest.id, sender_user_id=p.user_id, sender_name=p.username,
                               study_uids=uids, subject=body.subject, message=body.message, priority=level,
                               recipient=body.recipient.strip() or None, recipient_user_id=recipient_user_id)
        for uid in uids:
            retrievals.enqueue(conn, node_id=node.id, study_uid=uid, purpose="transfer", transaction_id=tid,
                               institution_id=node.institution_id, requested_by=p.username)
    except (TransactionError, retrievals.RetrievalError) as exc:
        raise Problem(422, str(exc)) from None
    from imex.exchanges.tables import transactions

    tx = conn.execute(select(transactions).where(transactions.c.id == tid)).one()
    messages.tell(conn, tx, dest.id, node.institution_id, "New exchange")
    for uid in uids:
        audit.record(s, "exchange.send", object_type="transaction", object_id=tid, study_uid=uid,
                     detail=f"pre-authorised from {node.name} to {dest.ods_code}", **p.audit_fields())
    return {"id": tid, "href": f"/exchanges/{tid}", "studies": len(uids)}
