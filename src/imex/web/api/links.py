"""Links to a study for recipients outside the network (/api/v1/links): a user with `links.manage` makes
one for a study they can see (another institution's study is 404, audited), lists the links of a study
with their state and uses, and revokes them. Links belong to the creator's institution."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.db.models import Study, StudyLink
from imex.links import manage
from imex.notify.email import queue_email
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.views.links import links_query
from imex.web.views.transfers import visible_study

router = APIRouter(prefix="/api/v1", tags=["links"])


class LinkIn(BaseModel):
    study_id: int = Field(..., ge=1, le=2**31 - 1)
    email: str = Field(..., min_length=3, max_length=320, description="The one person the link is for")
    mode: Literal["view", "download"] = Field("view", description="view only, or view and download (zip)")
    days: int | None = Field(None, ge=1, le=3650, description="Days until it expires (default: links.expiry_days)")
    send_email: bool = Field(True, description="E-mail the link to the address (no patient identifiers)")


def link_url(request: Request, pt: Portal, token: str) -> str:
    root = str(pt.config["links.public_url"]).rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}/l/{token}"


@router.post("/links", status_code=201, summary="Make a link to a study for one outside e-mail address")
def create_link(
    body: LinkIn,
    request: Request,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("links.manage")
    study, patient, source = visible_study(s, p, body.study_id)
    made = manage.create(s, p, study, patient, pt.config, email=body.email, mode=body.mode, days=body.days)
    url = link_url(request, pt, made.token)
    if body.send_email:
        queue_email(
            s.connection(),
            [made.link.email],
            f"[imex] {source.name} has shared images with you",
            f"{source.name} has shared medical images with you through imex.\n\nOpen them here:\n{url}\n\n"
            "You will be asked for a one-time code, which is sent to this address. The link works until "
            f"{made.link.expires_at:%Y-%m-%d %H:%M} UTC.\n",
        )
    s.commit()
    return {**manage.summary(made.link), "url": url}


@router.get("/links", summary="The links of a study (or all the institution's links)")
def list_links(
    study_id: int | None = Query(None, ge=1, le=2**31 - 1),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> list[dict[str, Any]]:
    p.require("links.manage")
    stmt = links_query(p)
    if study_id is not None:
        visible_study(s, p, study_id)
        stmt = stmt.where(StudyLink.study_id == study_id)
    return [manage.summary(link) for link in s.scalars(stmt.order_by(StudyLink.id.desc()).limit(500))]


def _visible_link(s: Session, p: Principal, link_id: int) -> StudyLink:
    return visible_or_deny(s, p, s.scalar(links_query(p).where(StudyLink.id == link_id)), "link", link_id)


@router.get("/links/{link_id}", summary="One link, with its state and uses")
def get_link(link_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("links.manage")
    return manage.summary(_visible_link(s, p, link_id))


@router.post("/links/{link_id}/revoke", summary="End a link and every session opened with it")
def revoke_link(
    link_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("links.manage")
    link = _visible_link(s, p, link_id)
    manage.revoke(s, p, link, s.get(Study, link.study_id))  # type: ignore[arg-type]
    s.commit()
    return manage.summary(link)
