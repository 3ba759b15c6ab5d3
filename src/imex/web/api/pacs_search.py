"""Searching one's own institution's PACS through the hub (C-FIND, study then series level) and sending
what was found as a pre-authorised transfer (exchanges.from_pacs: one transaction, a retrieval per study;
the router hook sends each study on when it arrives). Only nodes of the user's institution with
query/retrieve on may be searched (another's is 404, audited); every search is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Node
from imex.dicom.query import FindFailed, NodeAddress, find_series, find_studies
from imex.exchanges import messages
from imex.exchanges.from_pacs import STUDY_UID, send_from_pacs
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.errors import Problem
from imex.web.views.pacs_search import SearchFields, searchable_node, searchable_nodes

router = APIRouter(prefix="/api/v1/pacs", tags=["exchanges"])


@router.get("/nodes", summary="The PACS nodes of your institution the hub may search")
def list_nodes(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return searchable_nodes(s, p)


def _address(node: Node) -> NodeAddress:
    return NodeAddress(node.ae_title, node.host, node.port)


@router.get("/{node_id}/studies", summary="Search a PACS of your institution (C-FIND, study level)")
def search_studies(
    node_id: ObjectId,
    fields: SearchFields = Depends(),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    node = searchable_node(s, p, node_id)
    if fields.query.is_empty():
        raise Problem(
            422,
            "say what to search for: a patient ID or NHS number, name, date of birth, accession "
            "number, modality or dates",
        )
    address = _address(node)
    s.commit()
    try:
        found = find_studies(
            pt.config["dicom.ae_title"],
            address,
            fields.query,
            timeout=pt.config["exchange.search_timeout_seconds"],
            limit=200,
        )
    except FindFailed as exc:
        audit.record(
            s,
            "pacs.search",
            outcome="failure",
            object_type="node",
            object_id=node.id,
            detail=f"{fields.describe()}: {exc}"[:4000],
            **p.audit_fields(),
        )
        s.commit()
        raise Problem(502, f"the search of {node.name} failed: {exc}") from None
    audit.record(
        s,
        "pacs.search",
        object_type="node",
        object_id=node.id,
        patient_id=fields.query.patient_id,
        detail=f"{fields.describe()}: {len(found)} studies",
        **p.audit_fields(),
    )
    return {
        "node": node.name,
        "items": [
            {
                "study_uid": m.study_uid,
                "patient_id": m.patient_id,
                "patient_name": m.patient_name,
                "birth_date": m.birth_date,
                "sex": m.sex,
                "accession": m.accession,
                "study_date": m.study_date,
                "description": m.description,
                "modalities": list(m.modalities),
                "series": m.series_count,
                "images": m.instance_count,
            }
            for m in found
        ],
    }


@router.get("/{node_id}/studies/{study_uid}/series", summary="The series of one study on a PACS of your institution")
def search_series(
    node_id: ObjectId,
    study_uid: str,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    node = searchable_node(s, p, node_id)
    if not STUDY_UID.match(study_uid):
        raise Problem(422, "a study instance UID is digits and dots, at most 64 characters")
    address = _address(node)
    s.commit()
    try:
        found = find_series(
            pt.config["dicom.ae_title"], address, study_uid, timeout=pt.config["exchange.search_timeout_seconds"]
        )
    except FindFailed as exc:
        raise Problem(502, f"the search of {node.name} failed: {exc}") from None
    audit.record(
        s,
        "pacs.search",
        object_type="node",
        object_id=node.id,
        study_uid=study_uid,
        detail=f"series of study: {len(found)} series",
        **p.audit_fields(),
    )
    return {
        "study_uid": study_uid,
        "items": [
            {
                "series_uid": x.series_uid,
                "modality": x.modality,
                "number": x.number,
                "description": x.description,
                "body_part": x.body_part,
                "images": x.instance_count,
            }
            for x in found
        ],
    }


class SendIn(BaseModel):
    study_uids: list[str] = Field(..., min_length=1, max_length=50)
    destination: str = Field(..., min_length=1, max_length=16, description="The destination institution's ODS code")
    priority: str = Field("routine", description="routine, urgent or emergency")
    recipient: str = Field("", max_length=200, description="Who the images are for (free text)")
    recipient_user: str = Field("", max_length=64, description="A destination user's username, told directly")
    subject: str = Field("", max_length=200)
    message: str = Field("", max_length=messages.MAX_BODY)


@router.post(
    "/{node_id}/send",
    status_code=201,
    summary="Send studies from a PACS of your institution: one pre-authorised exchange, retrieved by C-MOVE",
)
def send_studies(
    node_id: ObjectId, body: SendIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    node = searchable_node(s, p, node_id)
    sent = send_from_pacs(
        s,
        node.id,
        body.study_uids,
        body.destination,
        p,
        priority=body.priority,
        recipient=body.recipient,
        recipient_user=body.recipient_user,
        subject=body.subject,
        message=body.message,
    )
    return {"id": sent.transaction_id, "href": f"/exchanges/{sent.transaction_id}", "studies": sent.studies}
