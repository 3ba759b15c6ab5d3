"""Destination health for PACS managers: how each node that receives studies is doing, and Retry now
for a whole destination once it is fixed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.views.destinations import destinations, retry_destination

router = APIRouter(prefix="/api/v1", tags=["transfers"])


@router.get(
    "/destinations",
    summary="Each destination node of your institution (all for system admins): last success, last error, "
    "what waits for it and since when it has been failing",
)
def get_destinations(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    return destinations(s, p)


@router.post(
    "/destinations/{node_id}/retry",
    summary="Send now every transfer to this node that failed or waits after a failed attempt",
)
def retry(
    node_id: ObjectId, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return retry_destination(s, pt.db, p, node_id)
