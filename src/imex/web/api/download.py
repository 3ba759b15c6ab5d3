"""Download a study as a zip with a DICOMDIR, for a system that cannot receive DICOM: scoped like every
study route (another institution's study is 404, audited), needs `studies.download`, audited."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.export import study_members
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.views.download import zip_response
from imex.web.views.transfers import visible_study

router = APIRouter(prefix="/api/v1", tags=["studies"])


@router.get(
    "/studies/{study_id}/download",
    summary="The study as a zip: DICOMDIR and the instances as stored",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_study(
    study_id: ObjectId,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> StreamingResponse:
    p.require("studies.download")
    study, patient, _ = visible_study(s, p, study_id)
    members = study_members(s, pt.hub.store, study.id)  # type: ignore[union-attr]
    response = zip_response(members, f"imex-study-{study.id}.zip")
    audit.record(
        s,
        "study.download",
        study_uid=study.study_uid,
        patient_id=patient.patient_id,
        object_type="study",
        object_id=study.id,
        detail=f"zip with DICOMDIR, {len(members)} instances",
        **p.audit_fields(),
    )
    s.commit()
    return response
