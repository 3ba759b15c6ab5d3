"""Portal pages of the locator (mirrors web/api/locator.py): the search ("find it"), a remote study in the
viewer while it arrives ("view it", with "source it"), and the institution's discoverability and sweeps
for its admins. The pages are shells; src/imex/web/static/locator.js calls the JSON API
(imex.web.api.locator)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Institution, Node
from imex.locator import policy
from imex.locator import search as locator_search
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.pages.render import render
from imex.web.views.locator import sweeps, visible_entry

router = APIRouter(include_in_schema=False)


@router.get("/locator")
def locator_page(request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> HTMLResponse:
    p.require("locator.search")
    return render(request, "locator.html", reasons=locator_search.reasons(pt.config))


@router.get("/locator/view/{entry_id}")
def locator_view_page(
    entry_id: ObjectId, request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    entry, inst = visible_entry(s, p, entry_id)
    p.require("studies.view")
    audit.record(
        s,
        "study.view",
        study_uid=entry.study_uid,
        patient_id=entry.nhs_number,
        object_type="locator_entry",
        object_id=entry.id,
        detail=f"held by {inst.ods_code}: opened in the viewer from the locator",
        **p.audit_fields(),
    )
    s.commit()
    return render(
        request, "locator_view.html", entry=entry, holder=inst, may_source=entry.institution_id != p.institution_id
    )


@router.get("/admin/locator")
def locator_admin_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    p.require("nodes.manage")
    nodes = [n for n, _ in s.execute(scope.nodes_query(p).where(Node.query_retrieve.is_(True)).order_by(Node.name))]
    mine = policy.get(s, p.institution_id)
    others = s.scalars(
        select(Institution.ods_code).where(Institution.id != p.institution_id).order_by(Institution.ods_code)
    ).all()
    return render(
        request,
        "locator_admin.html",
        policy=mine,
        institutions=others,
        networks=policy.networks(s),
        sweeps=sweeps(s, p),
        nodes=nodes,
    )
