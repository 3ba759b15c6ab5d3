"""Acting on a locator result: "view it" retrieves a study held elsewhere into the hub's short-lived view
cache (a C-MOVE; never routed on), and "source it" brings a study the hub already holds into the user's
own PACS as a push transaction. A study the hub does not hold is sourced with an image request instead
(the caller offers the pre-filled form).

The caller has checked that the entry is visible to the user."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Institution, LocatorEntry, Node, Retrieval, Study
from imex.errors import Conflict
from imex.exchanges.retrievals import RetrievalError, enqueue
from imex.exchanges.transactions import TransactionError, open_transaction
from imex.locator.search import viewable


def retrieval_node(s: Session, entry: LocatorEntry) -> Node | None:
    """The node to C-MOVE the study from: the one it was swept from, else a PACS of the institution the hub
    may query and retrieve."""
    query = select(Node).where(
        Node.institution_id == entry.institution_id, Node.enabled.is_(True), Node.query_retrieve.is_(True)
    )
    if entry.node_id is not None:
        node = s.scalar(query.where(Node.id == entry.node_id))
        if node is not None:
            return node
    return s.scalar(query.order_by(Node.id))


def held_at_hub(s: Session, actor: Principal, study_uid: str) -> Study | None:
    """The hub's copy of the study, when it holds one the actor may see."""
    row = s.execute(scope.studies_query(actor).where(Study.study_uid == study_uid)).first()
    return row[0] if row else None


def open_in_viewer(s: Session, entry: LocatorEntry, holder: Institution, actor: Principal) -> int | None:
    """Make the study viewable at the hub: the id of the retrieval into the view cache (an earlier one still
    under way is reused), or None when the hub holds it already; audited. Conflict when it cannot be
    retrieved (known only by accession number, or no PACS of the holder the hub may retrieve from)."""
    if not viewable(entry):
        raise Conflict(f"{holder.name}'s RIS told of this study without its UID; request it instead")
    retrieval_id = None
    if held_at_hub(s, actor, entry.study_uid) is None:
        node = retrieval_node(s, entry)
        if node is None:
            raise Conflict(f"the hub may not retrieve from {holder.name}'s PACS; request the study instead")
        asked = s.scalar(
            select(Retrieval.id).where(
                Retrieval.study_uid == entry.study_uid,
                Retrieval.purpose == "view",
                Retrieval.institution_id == actor.institution_id,
                Retrieval.state.in_(("pending", "moving")),
            )
        )
        try:
            retrieval_id = asked or enqueue(
                s.connection(),
                node_id=node.id,
                study_uid=entry.study_uid,
                purpose="view",
                institution_id=actor.institution_id,
                requested_by=actor.username,
            )
        except RetrievalError as exc:  # the holder's PACS cannot serve it now: not the request's fault
            raise Conflict(str(exc)) from None
    audit.record(
        s,
        "locator.view",
        study_uid=entry.study_uid,
        patient_id=entry.nhs_number,
        object_type="locator_entry",
        object_id=entry.id,
        detail=f"held by {holder.ods_code}; "
        + (f"retrieval {retrieval_id} into the view cache" if retrieval_id else "already at the hub"),
        **actor.audit_fields(),
    )
    return retrieval_id


def source_entry(s: Session, entry: LocatorEntry, holder: Institution, actor: Principal) -> int | None:
    """Send the study the hub holds to the actor's institution as a push transaction and return its id;
    audited. None when it must be asked for with an image request instead (the hub does not hold it, it is
    still arriving, or the actor may not send studies). Conflict when the actor's own institution holds
    it, or the transaction cannot be opened (e.g. their institution has no node to deliver to)."""
    if entry.institution_id == actor.institution_id:
        raise Conflict("your own institution holds this study already")
    study = held_at_hub(s, actor, entry.study_uid)
    if study is None or study.route_state == "receiving" or not actor.can("studies.send"):
        return None
    try:
        tid = open_transaction(
            s.connection(),
            kind="push",
            source_institution_id=entry.institution_id,
            destination_institution_id=actor.institution_id,
            sender_user_id=actor.user_id,
            sender_name=actor.username,
            study_uids=[entry.study_uid],
            subject=f"From {holder.ods_code}: {entry.description or entry.modalities}"[:200],
            message=f"Sourced from the locator by {actor.username} after viewing it.",
        )
    except TransactionError as exc:  # the state of the directory, not the request, stands in the way
        raise Conflict(str(exc)) from None
    audit.record(
        s,
        "locator.source",
        study_uid=entry.study_uid,
        patient_id=entry.nhs_number,
        object_type="transaction",
        object_id=tid,
        detail=f"from {holder.ods_code} to {actor.institution_ods}",
        **actor.audit_fields(),
    )
    return tid
