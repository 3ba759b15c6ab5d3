"""The patient imaging locator in the JSON API: search by NHS number and date of birth with a reason,
view a study held elsewhere before importing it (C-MOVE into the hub's short-lived cache), source it into
your own PACS (a transaction, or a pre-filled image request), and the admin side: discoverability,
networks and PACS sweeps."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Institution, LocatorEntry, Node
from imex.locator import policy
from imex.locator import search as locator_search
from imex.locator.sourcing import open_in_viewer, source_entry
from imex.locator.sweep import configure
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import refused
from imex.web.views.locator import sweep_view, sweeps, visible_entry

router = APIRouter(prefix="/api/v1", tags=["locator"])


class SearchIn(BaseModel):
    nhs_number: str = Field(..., max_length=20, description="The patient's NHS number (10 digits, modulus 11)")
    birth_date: str = Field(..., max_length=10, description="The patient's date of birth, YYYY-MM-DD")
    reason: str = Field(..., max_length=100, description="Why you are searching: one of GET /locator/reasons")


@router.get("/locator/reasons", summary="The reasons a locator search may give")
def get_reasons(p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> list[str]:
    p.require("locator.search")
    return locator_search.reasons(pt.config)


def checked(
    pt: Portal, s: Session, p: Principal, nhs_number: str, birth_date: str, reason: str, via: str
) -> locator_search.Criteria:
    """The search input, or a 422 whose refusal is audited (a search without a reason is an event too)."""
    try:
        return locator_search.criteria(pt.config, nhs_number, birth_date, reason)
    except locator_search.SearchRefused as exc:
        audit.record(
            s,
            "locator.search",
            outcome="failure",
            object_type="patient",
            detail=f"refused ({via}): {exc}",
            **p.audit_fields(),
        )
        raise refused(exc) from None


@router.post("/locator/search", summary="Where was this patient imaged: studies other institutions hold")
def post_search(
    body: SearchIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("locator.search")
    c = checked(pt, s, p, body.nhs_number, body.birth_date, body.reason, "api")
    rows = locator_search.search(s, p, c)
    s.commit()
    hidden = [{"ods": i.ods_code, "name": i.name} for i in s.scalars(scope.undiscoverable_query(p))]
    return {
        "reason": c.reason,
        "items": [locator_search.result(e, i.ods_code, i.name) for e, i in rows],
        # institutions whose holdings this search could not look at (their discoverability settings)
        "not_searched": hidden,
    }


@router.post(
    "/locator/entries/{entry_id}/view",
    summary="Open a study held elsewhere in the viewer: the hub "
    "retrieves it into its short-lived cache (never routed) and the viewer shows images as they arrive",
)
def post_view(
    entry_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    entry, inst = visible_entry(s, p, entry_id)
    p.require("studies.view")
    retrieval_id = open_in_viewer(s, entry, inst, p)
    s.commit()
    return {"viewer": f"/locator/view/{entry.id}", "retrieval_id": retrieval_id}


def request_form(entry: LocatorEntry, inst: Institution, reason: str = "") -> str:
    """The image request form, pre-filled for this study (the requests pages read these fields)."""
    fields = {
        "source": inst.ods_code,
        "nhs_number": entry.nhs_number,
        "birth_date": entry.birth_date,
        "patient_id": entry.patient_id,
        "accession": entry.accession,
        "study_uid": entry.study_uid if locator_search.viewable(entry) else "",
        "modality": entry.modalities.split("\\")[0],
        "date_from": entry.study_date,
        "date_to": entry.study_date,
        "reason": reason,
    }
    return "/requests/new?" + urlencode({k: v for k, v in fields.items() if v})


@router.post(
    "/locator/entries/{entry_id}/source",
    summary="Source a study into your own PACS: a transfer when "
    "the hub already holds it (e.g. viewed), otherwise a pre-filled image request",
)
def post_source(
    entry_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    entry, inst = visible_entry(s, p, entry_id)
    tid = source_entry(s, entry, inst, p)
    if tid is None:
        return {"request_form": request_form(entry, inst)}
    s.commit()
    return {"transaction_id": tid, "exchange": f"/exchanges/{tid}"}


# -- admin: discoverability, networks, sweeps ---------------------------------------------------------------


class PolicyIn(BaseModel):
    mode: Literal["none", "everyone", "restricted"]
    partners: list[str] = Field(default_factory=list, max_length=500, description="ODS codes (restricted mode)")
    networks: list[str] = Field(default_factory=list, max_length=100, description="Network names (restricted mode)")


def _policy_institution(s: Session, p: Principal, ods: str | None) -> Institution:
    p.require("nodes.manage")
    if ods is None:
        return s.get(Institution, p.institution_id)  # type: ignore[return-value]
    return visible_or_deny(
        s, p, s.scalar(scope.institutions_query(p).where(Institution.ods_code == ods.upper())), "institution", ods
    )


@router.get("/locator/discoverability", summary="Who may find your institution's holdings in the locator")
def get_policy(
    institution: str | None = Query(None, max_length=16),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, object]:
    inst = _policy_institution(s, p, institution)
    return policy.get(s, inst.id).as_dict()


@router.put(
    "/locator/discoverability",
    summary="Set who may find your institution's holdings: nobody, "
    "everyone, or named partner institutions and networks",
)
def put_policy(
    body: PolicyIn,
    institution: str | None = Query(None, max_length=16),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, object]:
    inst = _policy_institution(s, p, institution)
    result = policy.set_policy(s, inst.id, body.mode, partners=body.partners, networks=body.networks, actor=p.username)
    audit.record(
        s,
        "locator.discoverability",
        object_type="institution",
        object_id=inst.ods_code,
        detail=f"{body.mode}; partners {', '.join(result.partners) or '-'}; networks "
        f"{', '.join(result.networks) or '-'}",
        **p.audit_fields(),
    )
    s.commit()
    return result.as_dict()


class NetworkIn(BaseModel):
    members: list[str] = Field(..., max_length=500, description="ODS codes of the member institutions")
    description: str = Field("", max_length=200)


@router.get("/locator/networks", summary="Networks of institutions (e.g. a stroke network)")
def get_networks(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, list[str]]:
    p.require("locator.search")
    return policy.networks(s)


@router.put("/locator/networks/{name}", summary="Create or replace a network and its members (hub admins)")
def put_network(
    body: NetworkIn,
    name: str = Path(..., min_length=1, max_length=64),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("system.admin")
    members = policy.set_network(s, name, body.members, body.description)
    audit.record(
        s, "locator.network", object_type="network", object_id=name[:64], detail=", ".join(members), **p.audit_fields()
    )
    s.commit()
    return {"name": name, "members": members}


@router.get("/locator/sweeps", summary="Sweeps of your institution's PACS and how far they got")
def get_sweeps(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return sweeps(s, p)


class SweepIn(BaseModel):
    enabled: bool = True
    interval_minutes: int | None = Field(None, ge=1, le=10080)
    lookback_days: int | None = Field(None, ge=1, le=36500)
    queries_per_minute: int | None = Field(None, ge=1, le=6000)


@router.put(
    "/locator/sweeps/{node_id}",
    summary="Sweep a PACS of your institution for the locator (it must allow query/retrieve by the hub)",
)
def put_sweep(
    node_id: ObjectId,
    body: SweepIn,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("nodes.manage")
    node, _ = visible_or_deny(s, p, s.execute(scope.nodes_query(p).where(Node.id == node_id)).first(), "node", node_id)
    name = node.name
    audit.record(
        s,
        "locator.sweep",
        object_type="node",
        object_id=name,
        detail=f"enabled={body.enabled} every {body.interval_minutes} min, {body.lookback_days} days back, "
        f"{body.queries_per_minute}/min",
        **p.audit_fields(),
    )
    s.commit()
    sweep = configure(
        pt.db,
        name,
        enabled=body.enabled,
        interval_minutes=body.interval_minutes,
        lookback_days=body.lookback_days,
        queries_per_minute=body.queries_per_minute,
    )
    return sweep_view(sweep, node)
