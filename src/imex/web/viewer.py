"""The 2D viewer page: a study the caller may see, opened in the browser with no software installed. The
page is a shell; its script reads the study through DICOMweb (QIDO-RS for series, WADO-RS for metadata,
thumbnails and rendered frames), so the viewer sees exactly what DICOMweb lets the caller see. Every opening
is audited."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Study
from imex.auth import scope
from imex.web.deps import ObjectId, db_session, signed_in, visible_or_deny
from imex.web.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/studies/{study_id}/viewer")
def viewer_page(study_id: ObjectId, request: Request, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> HTMLResponse:
    p.require("studies.view")
    study, patient, source = visible_or_deny(s, p, s.execute(scope.studies_query(p).where(Study.id == study_id)).first(),
                                             "study", study_id)
    audit.record(s, "study.view", study_uid=study.study_uid, patient_id=patient.patient_id, object_type="study",
                 object_id=study_id, detail="opened in the viewer", **p.audit_fields())
    s.commit()
    return render(request, "viewer.html", study=study, patient=patient, source=source)
