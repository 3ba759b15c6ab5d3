"""FHIR R4 ImagingStudy search over the locator, so an electronic patient record can show "imaging held
elsewhere":

    GET /fhir/ImagingStudy?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919
        &patient.birthdate=1970-01-01&reason=direct%20care

with a bearer token (POST /api/v1/auth/token). The reason (one of `locator.reasons`) is the `reason` search
parameter or the `X-Access-Reason` header; the date of birth is required and an entry whose date of birth
differs is never returned. Answers are application/fhir+json: a searchset Bundle, or an OperationOutcome
with a 4xx status saying what was wrong."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import PermissionDenied, Principal
from imex.db.models import LocatorEntry
from imex.locator import search as locator_search
from imex.locator.entries import series_of
from imex.web.context import Portal
from imex.web.deps import db_session, portal, signed_in
from imex.web.errors import SignInRequired

router = APIRouter(include_in_schema=False)
FHIR_JSON = "application/fhir+json"
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
KNOWN = {"patient.identifier", "patient.birthdate", "reason", "_format"}


def outcome(status: int, code: str, text: str) -> JSONResponse:
    """An OperationOutcome with one issue; `code` from the FHIR issue-type value set."""
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    headers = {"WWW-Authenticate": 'Bearer realm="imex"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def _started(entry: LocatorEntry) -> str | None:
    d, t = entry.study_date, "".join(ch for ch in entry.study_time.split(".")[0] if ch.isdigit())
    if len(d) != 8 or not d.isdigit():
        return None
    day = f"{d[:4]}-{d[4:6]}-{d[6:]}"
    return f"{day}T{t[:2]}:{t[2:4]}:{t[4:6]}Z" if len(t) >= 6 else day


def _organization(ods: str, name: str) -> dict[str, Any]:
    return {"type": "Organization", "identifier": {"system": ODS_SYSTEM, "value": ods}, "display": name}


def imaging_study(entry: LocatorEntry, ods: str, name: str) -> dict[str, Any]:
    """One locator entry as an ImagingStudy (FHIR R4); the holding institution is the Organization that
    assigned its identifiers and performed its series."""
    holder = _organization(ods, name)
    identifiers: list[dict[str, Any]] = []
    if not entry.study_uid.startswith("acc:"):
        identifiers.append({"system": "urn:dicom:uid", "value": f"urn:oid:{entry.study_uid}", "assigner": holder})
    if entry.accession:
        identifiers.append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": entry.accession,
                "assigner": holder,
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": f"locator-{entry.id}",
        "identifier": identifiers,
        "status": "available",
        "subject": {"type": "Patient", "identifier": {"system": NHS_SYSTEM, "value": entry.nhs_number}},
        "modality": [{"system": DCM, "code": m} for m in entry.modalities.split("\\") if m],
    }
    started = _started(entry)
    if started:
        resource["started"] = started
    if entry.num_series:
        resource["numberOfSeries"] = entry.num_series
    if entry.num_instances:
        resource["numberOfInstances"] = entry.num_instances
    if entry.description:
        resource["description"] = entry.description
    series = []
    for s in series_of(entry.series_json):
        item: dict[str, Any] = {
            "uid": s.get("uid", ""),
            "modality": {"system": DCM, "code": s.get("modality") or "OT"},
            "performer": [{"actor": holder}],
        }
        if isinstance(s.get("number"), int):
            item["number"] = s["number"]
        if s.get("description"):
            item["description"] = s["description"]
        if isinstance(s.get("instances"), int):
            item["numberOfInstances"] = s["instances"]
        if s.get("body_part"):
            item["bodySite"] = {"display": s["body_part"]}
        if item["uid"]:
            series.append(item)
    if series:
        resource["series"] = series
    resource["extension"] = [
        {"url": "https://imex.example/fhir/StructureDefinition/locator-source", "valueCode": entry.source}
    ]
    resource["meta"] = {"lastUpdated": entry.seen_at.isoformat(timespec="seconds") + "Z"}
    return resource


def _nhs_number(value: str) -> str | None:
    """The NHS number of `system|value`; None when the system is not the NHS number's."""
    system, bar, number = value.partition("|")
    if not bar or system.strip() != NHS_SYSTEM:
        return None
    return number.strip()


@router.get("/fhir/ImagingStudy")
def search_imaging_studies(
    request: Request, s: Session = Depends(db_session), pt: Portal = Depends(portal)
) -> JSONResponse:
    try:
        p: Principal = signed_in(request, s, pt)
    except SignInRequired as exc:
        return outcome(401, "login", f"send a bearer token from POST /api/v1/auth/token ({exc.detail})")
    if not p.can("locator.search"):
        audit.record(
            s,
            "access.denied",
            outcome="denied",
            object_type="permission",
            object_id="locator.search",
            detail="GET /fhir/ImagingStudy",
            **p.audit_fields(),
        )
        s.commit()
        return outcome(403, "forbidden", "this needs the permission 'locator.search'")
    params = request.query_params
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        return outcome(
            400,
            "not-supported",
            f"search parameter(s) not supported: {', '.join(unknown)[:200]}; use "
            "patient.identifier, patient.birthdate and reason",
        )
    identifiers = params.getlist("patient.identifier")
    if len(identifiers) != 1:
        return outcome(400, "required", f"give exactly one patient.identifier={NHS_SYSTEM}|<NHS number>")
    number = _nhs_number(identifiers[0])
    if number is None:
        return outcome(400, "value", f"patient.identifier must be {NHS_SYSTEM}|<NHS number>")
    reason = params.get("reason") or request.headers.get("x-access-reason", "")
    try:
        c = locator_search.criteria(pt.config, number, params.get("patient.birthdate", ""), reason)
    except locator_search.SearchRefused as exc:
        audit.record(
            s,
            "locator.search",
            outcome="failure",
            object_type="patient",
            detail=f"refused (fhir): {exc}",
            **p.audit_fields(),
        )
        s.commit()
        return outcome(400, "required" if isinstance(exc, locator_search.SearchIncomplete) else "value", str(exc))
    try:
        rows = locator_search.search(s, p, c, via="fhir")
    except PermissionDenied:  # pragma: no cover - checked above
        return outcome(403, "forbidden", "not permitted")
    s.commit()
    base = str(request.base_url).rstrip("/")
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(rows),
        "link": [
            {"relation": "self", "url": f"{base}/fhir/ImagingStudy?patient.identifier={NHS_SYSTEM}|{c.nhs_number}"}
        ],
        "entry": [
            {
                "fullUrl": f"{base}/fhir/ImagingStudy/locator-{e.id}",
                "resource": imaging_study(e, i.ods_code, i.name),
                "search": {"mode": "match"},
            }
            for e, i in rows
        ],
    }
    return JSONResponse(bundle, media_type=FHIR_JSON)
