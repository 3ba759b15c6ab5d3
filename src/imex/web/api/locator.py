"""The patient imaging locator in the JSON API: search by NHS number and date of birth with a reason,
view a study held elsewhere before importing it (C-MOVE into the hub's short-lived cache), source it into
your own PACS (a transaction, or a pre-filled image request), and the admin side: discoverability,
networks and PACS sweeps."""
from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Institution, Node, Study
from imex.db.models_exchange import Retrieval
from imex.db.models_locator import LocatorEntry, LocatorSweep
from imex.locator import policy, search as locator_search
from imex.locator.sweep import SweepError, configure
from imex.auth import scope
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem, Refused

router = APIRouter(prefix="/api/v1", tags=["locator"])


class SearchIn(BaseModel):
    nhs_number: str = Field(..., max_length=20, description="The patient's NHS number (10 digits, modulus 11)")
    birth_date: str = Field(..., max_length=10, description="The patient's date of birth, YYYY-MM-DD")
    reason: str = Field(..., max_length=100, description="Why you are searching: one of GET /locator/reasons")


@router.get("/locator/reasons", summary="The reasons a locator search may give")
def get_reasons(p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> list[str]:
    p.require("locator.search")
    return locator_search.reasons(pt.config)


def checked(pt: Portal, s: Session, p: Principal, nhs_number: str, birth_date: str, reason: str,
            via: str) -> locator_search.Criteria:
    """The search input, or a 422 whose refusal is audited (a search without a reason is an event too)."""
    try:
        return locator_search.criteria(pt.config, nhs_number, birth_date, reason)
    except locator_search.SearchRefused as exc:
        audit.record(s, "locator.search", outcome="failure", object_type="patient", detail=f"refused ({via}): {exc}",
                     **p.audit_fields())
        raise Refused(422, str(exc)) from None


@router.post("/locator/search", summary="Where was this patient imaged: studies other institutions hold")
def post_search(body: SearchIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("locator.search")
    c = checked(pt, s, p, body.nhs_number, body.birth_date, body.reason, "api")
    rows = locator_search.search(s, p, c)
    s.commit()
    return {"reason": c.reason, "items": [locator_search.result(e, i.ods_code, i.name) for e, i in rows]}


def visible_entry(s: Session, p: Principal, entry_id: int) -> tuple[LocatorEntry, Institution]:
    p.require("locator.search")
    return visible_or_deny(s, p, s.execute(scope.locator_query(p).where(LocatorEntry.id == entry_id)).first(),
                           "locator entry", entry_id)  # type: ignore[return-value]


def retrieval_node(s: Session, entry: LocatorEntry) -> Node | None:
    """The node to C-MOVE the study from: the one it was swept from, else a PACS of the institution the hub
    may query and retrieve."""
    query = select(Node).where(Node.institution_id == entry.institution_id, Node.enabled.is_(True),
                               Node.query_retrieve.is_(True))
    if entry.node_id is not None:
        node = s.scalar(query.where(Node.id == entry.node_id))
        if node is not None:
            return node
    return s.scalar(query.order_by(Node.id))


def _at_hub(s: Session, p: Principal, study_uid: str) -> Study | None:
    row = s.execute(scope.studies_query(p).where(Study.study_uid == study_uid)).first()
    return row[0] if row else None


@router.post("/locator/entries/{entry_id}/view", summary="Open a study held elsewhere in the viewer: the hub "
             "retrieves it into its short-lived cache (never routed) and the viewer shows images as they arrive")
def post_view(entry_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.exchanges.retrievals import RetrievalError, enqueue

    entry, inst = visible_entry(s, p, entry_id)
    p.require("studies.view")
    if not locator_search.viewable(entry):
        raise Problem(409, f"{inst.name}'s RIS told of this study without its UID; request it instead")
    retrieval_id = None
    if _at_hub(s, p, entry.study_uid) is None:
        node = retrieval_node(s, entry)
        if node is None:
            raise Problem(409, f"the hub may not retrieve from {inst.name}'s PACS; request the study instead")
        asked = s.scalar(select(Retrieval.id).where(
            Retrieval.study_uid == entry.study_uid, Retrieval.purpose == "view",
            Retrieval.institution_id == p.institution_id, Retrieval.state.in_(("pending", "moving"))))
        try:
            retrieval_id = asked or enqueue(s.connection(), node_id=node.id, study_uid=entry.study_uid, purpose="view",
                                            institution_id=p.institution_id, requested_by=p.username)
        except RetrievalError as exc:
            raise Problem(409, str(exc)) from None
    audit.record(s, "locator.view", study_uid=entry.study_uid, patient_id=entry.nhs_number, object_type="locator_entry",
                 object_id=entry.id, detail=f"held by {inst.ods_code}; "
                 + (f"retrieval {retrieval_id} into the view cache" if retrieval_id else "already at the hub"),
                 **p.audit_fields())
    s.commit()
    return {"viewer": f"/locator/view/{entry.id}", "retrieval_id": retrieval_id}


def request_form(entry: LocatorEntry, inst: Institution, reason: str = "") -> str:
    """The image request form, pre-filled for this study (the requests pages read these fields)."""
    fields = {"source": inst.ods_code, "nhs_number": entry.nhs_number, "birth_date": entry.birth_date,
              "patient_id": entry.patient_id, "accession": entry.accession,
              "study_uid": entry.study_uid if locator_search.viewable(entry) else "",
              "modality": entry.modalities.split("\\")[0], "date_from": entry.study_date,
              "date_to": entry.study_date, "reason": reason}
    return "/requests/new?" + urlencode({k: v for k, v in fields.items() if v})


@router.post("/locator/entries/{entry_id}/source", summary="Source a study into your own PACS: a transfer when "
             "the hub already holds it (e.g. viewed), otherwise a pre-filled image request")
def post_source(entry_id: ObjectId, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.exchanges.transactions import TransactionError, open_transaction

    entry, inst = visible_entry(s, p, entry_id)
    if entry.institution_id == p.institution_id:
        raise Problem(409, "your own institution holds this study already")
    study = _at_hub(s, p, entry.study_uid)
    if study is None or study.route_state == "receiving" or not p.can("studies.send"):
        return {"request_form": request_form(entry, inst)}
    try:
        tid = open_transaction(s.connection(), kind="push", source_institution_id=entry.institution_id,
                               destination_institution_id=p.institution_id, sender_user_id=p.user_id,
                               sender_name=p.username, study_uids=[entry.study_uid],
                               subject=f"From {inst.ods_code}: {entry.description or entry.modalities}"[:200],
                               message=f"Sourced from the locator by {p.username} after viewing it.")
    except TransactionError as exc:
        raise Problem(409, str(exc)) from None
    audit.record(s, "locator.source", study_uid=entry.study_uid, patient_id=entry.nhs_number, object_type="transaction",
                 object_id=tid, detail=f"from {inst.ods_code} to {p.institution_ods}", **p.audit_fields())
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
    return visible_or_deny(s, p, s.scalar(scope.institutions_query(p).where(Institution.ods_code == ods.upper())),
                           "institution", ods)


@router.get("/locator/discoverability", summary="Who may find your institution's holdings in the locator")
def get_policy(institution: str | None = Query(None, max_length=16), p: Principal = Depends(signed_in),
               s: Session = Depends(db_session)) -> dict[str, object]:
    inst = _policy_institution(s, p, institution)
    return policy.get(s, inst.id).as_dict()


@router.put("/locator/discoverability", summary="Set who may find your institution's holdings: nobody, "
            "everyone, or named partner institutions and networks")
def put_policy(body: PolicyIn, institution: str | None = Query(None, max_length=16), p: Principal = Depends(signed_in),
               s: Session = Depends(db_session)) -> dict[str, object]:
    inst = _policy_institution(s, p, institution)
    try:
        result = policy.set_policy(s, inst.id, body.mode, partners=body.partners, networks=body.networks,
                                   actor=p.username)
    except policy.PolicyError as exc:
        raise Problem(422, str(exc)) from None
    audit.record(s, "locator.discoverability", object_type="institution", object_id=inst.ods_code,
                 detail=f"{body.mode}; partners {', '.join(result.partners) or '-'}; networks "
                        f"{', '.join(result.networks) or '-'}", **p.audit_fields())
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
def put_network(body: NetworkIn, name: str = Path(..., min_length=1, max_length=64), p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("system.admin")
    try:
        members = policy.set_network(s, name, body.members, body.description)
    except policy.PolicyError as exc:
        raise Problem(422, str(exc)) from None
    audit.record(s, "locator.network", object_type="network", object_id=name[:64], detail=", ".join(members),
                 **p.audit_fields())
    s.commit()
    return {"name": name, "members": members}


def _sweep_view(sweep: LocatorSweep, node: Node) -> dict[str, Any]:
    return {"node": node.name, "enabled": sweep.enabled, "interval_minutes": sweep.interval_minutes,
            "lookback_days": sweep.lookback_days, "queries_per_minute": sweep.queries_per_minute,
            "swept_to": sweep.swept_to, "next_run_at": sweep.next_run_at.isoformat() + "Z",
            "attempts": sweep.attempts, "last_error": sweep.last_error,
            "last_ok_at": sweep.last_ok_at.isoformat() + "Z" if sweep.last_ok_at else None,
            "studies_seen": sweep.studies_seen}


@router.get("/locator/sweeps", summary="Sweeps of your institution's PACS and how far they got")
def get_sweeps(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    p.require("nodes.manage")
    rows = s.execute(select(LocatorSweep, Node).join(Node, Node.id == LocatorSweep.node_id)
                     .where(scope.own_institution_clause(p, Node.institution_id)).order_by(Node.name)).all()
    return [_sweep_view(sw, node) for sw, node in rows]


class SweepIn(BaseModel):
    enabled: bool = True
    interval_minutes: int | None = Field(None, ge=1, le=10080)
    lookback_days: int | None = Field(None, ge=1, le=36500)
    queries_per_minute: int | None = Field(None, ge=1, le=6000)


@router.put("/locator/sweeps/{node_id}", summary="Sweep a PACS of your institution for the locator (it must allow "
            "query/retrieve by the hub)")
def put_sweep(node_id: ObjectId, body: SweepIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
              s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("nodes.manage")
    node, _ = visible_or_deny(s, p, s.execute(scope.nodes_query(p).where(Node.id == node_id)).first(), "node", node_id)
    name = node.name
    audit.record(s, "locator.sweep", object_type="node", object_id=name,
                 detail=f"enabled={body.enabled} every {body.interval_minutes} min, {body.lookback_days} days back, "
                        f"{body.queries_per_minute}/min", **p.audit_fields())
    s.commit()
    try:
        sweep = configure(pt.db, name, enabled=body.enabled, interval_minutes=body.interval_minutes,
                          lookback_days=body.lookback_days, queries_per_minute=body.queries_per_minute)
    except SweepError as exc:
        raise Problem(422, str(exc)) from None
    return _sweep_view(sweep, node)
