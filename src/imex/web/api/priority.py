"""Priority and named recipient of a transfer, set by its sender (or a hub admin) while it is unfinished."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.routing import priority as levels
from imex.routing.recipient import change
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.errors import Problem
from imex.web.views.transfers import may_change_priority, recipient_choices, visible_transfer

router = APIRouter(prefix="/api/v1", tags=["transfers"])


class PriorityIn(BaseModel):
    priority: Literal["emergency", "urgent", "routine"] | None = Field(None, description="New priority")
    recipient: str | None = Field(None, max_length=200, description="Person or team the study is for")
    recipient_user_id: int | None = Field(
        None, ge=1, le=2**31 - 1, description="A user of the destination institution to tell directly"
    )


@router.post(
    "/transfers/{transfer_id}/priority",
    summary="Set the priority and named recipient of a transfer your institution sends",
)
def set_priority(
    transfer_id: ObjectId,
    body: PriorityIn,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    may_change_priority(p)
    detail = visible_transfer(s, p, transfer_id)
    if detail["direction"] != "outgoing" and not p.is_system_admin:
        raise Problem(403, "only the sending institution (or a hub admin) sets a transfer's priority and recipient")
    s.commit()
    changed = change(
        pt.db,
        transfer_id,
        priority=levels.parse(body.priority) if body.priority else None,
        recipient=body.recipient,
        recipient_user_id=body.recipient_user_id,
        actor=p.username,
    )
    if changed:
        audit.record(
            s,
            "transfer.priority",
            study_uid=detail["study_uid"],
            patient_id=detail["patient_id"],
            object_type="transfer",
            object_id=transfer_id,
            detail="; ".join(changed),
            **p.audit_fields(),
        )
        s.commit()
    return visible_transfer(s, p, transfer_id)


@router.get(
    "/transfers/{transfer_id}/recipients",
    summary="Users of the destination institution who can be named as a transfer's recipient",
)
def recipients(
    transfer_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> list[dict[str, Any]]:
    return recipient_choices(s, p, transfer_id)
