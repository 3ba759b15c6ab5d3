"""Pages of worklists, transfers, studies and quarantine (mirrors web/api/transfers.py): the worklist, a
transfer with its history (and, for its sender, the priority and recipient form), a study, the 2D viewer
and the quarantine list.

The viewer page is a shell: its script reads the study through DICOMweb (QIDO-RS for series, WADO-RS for
metadata, thumbnails and rendered frames), so the viewer sees exactly what DICOMweb lets the caller see,
with no software installed. Every opening is audited."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.web.deps import ObjectId, db_session, signed_in
from imex.web.pages.render import render
from imex.web.views import admin as admin_views
from imex.web.views import transfers as transfer_views
from imex.web.views import worklist_row
from imex.web.views.folders import folders_for_study
from imex.web.views.links import links_for_study

router = APIRouter(include_in_schema=False)


@router.get("/worklist")
def worklist_page(
    request: Request,
    direction: str = Query("incoming", max_length=10),
    state: str = Query("", max_length=10),
    q: str = Query("", max_length=64),
    modality: str = Query("", max_length=16),
    date_from: str = Query("", max_length=10),
    date_to: str = Query("", max_length=10),
    worklist: int | None = Query(None, ge=1, le=2**31 - 1),
    sort: str = Query("received", max_length=12),
    order: str = Query("desc", max_length=4),
    offset: int = Query(0, ge=0, le=10**7),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    p.require("transfers.view")
    direction = direction if direction in ("all", "incoming", "outgoing") else "incoming"
    state = state if state in transfer_views.STATES else ""
    sort = sort if sort in transfer_views.SORTS else "received"
    order = order if order in ("asc", "desc") else "desc"
    filters_in = transfer_views.TransferFilters(
        direction,  # type: ignore[arg-type]
        state or None,  # type: ignore[arg-type]
        q,
        modality,
        date_from,
        date_to,
        worklist,
        sort,  # type: ignore[arg-type]
        order,  # type: ignore[arg-type]
    )
    page = filters_in.page(s, p, limit=50, offset=offset)  # audits a search
    s.commit()
    worklists = [worklist_row(w) for w in s.scalars(scope.worklists_query(p))]
    filters = {
        "direction": direction,
        "state": state,
        "q": q,
        "modality": modality,
        "date_from": date_from,
        "date_to": date_to,
        "worklist": worklist or "",
        "sort": sort,
        "order": order,
    }

    def link(**changes: object) -> str:
        return urlencode({k: v for k, v in {**filters, **changes}.items() if v not in ("", None)})

    return render(
        request,
        "worklist.html",
        page=page,
        filters=filters,
        worklists=worklists,
        offset=offset,
        states=transfer_views.STATES,
        link=link,
    )


@router.get("/transfers/{transfer_id}")
def transfer_page(
    transfer_id: ObjectId, request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    t = transfer_views.transfer_detail(s, p, transfer_id)
    recipients = None  # the priority and recipient form: senders (or hub admins) of an unfinished transfer
    if (
        (p.can("studies.send") or p.can("transfers.manage"))
        and (t["direction"] == "outgoing" or p.is_system_admin)
        and t["state"] not in ("delivered", "confirmed", "cancelled")
    ):
        recipients = transfer_views.recipient_choices(s, p, transfer_id)
    return render(request, "transfer.html", t=t, recipients=recipients)


@router.get("/studies/{study_id}")
def study_page(
    study_id: ObjectId, request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    return render(
        request,
        "study.html",
        study=transfer_views.study_detail(s, p, study_id),
        folders=folders_for_study(s, p),
        links=links_for_study(s, p, study_id),
    )


@router.get("/studies/{study_id}/viewer")
def viewer_page(
    study_id: ObjectId, request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    p.require("studies.view")
    study, patient, source = transfer_views.visible_study(s, p, study_id)
    audit.record(
        s,
        "study.view",
        study_uid=study.study_uid,
        patient_id=patient.patient_id,
        object_type="study",
        object_id=study_id,
        detail="opened in the viewer",
        **p.audit_fields(),
    )
    s.commit()
    return render(request, "viewer.html", study=study, patient=patient, source=source)


@router.get("/admin/quarantine")
def quarantine_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    studies = transfer_views.quarantine(s, p, 500, 0)
    return render(request, "admin_quarantine.html", studies=studies, directory=admin_views.directory(s))
