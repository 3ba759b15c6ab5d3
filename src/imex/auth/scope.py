"""What a principal may see, decided in one place: every portal page and API route reads transfers,
studies, nodes, users and audit events through these functions, never with its own WHERE clause.

A transfer is visible to the institution that sent the study (outgoing) and to the one it goes to
(incoming); a study to its source institution and to every institution it was sent to. System admins see
everything. Anything not visible is "not found", so IDs of other institutions reveal nothing.
"""

from __future__ import annotations

from sqlalchemy import Select, and_, exists, false, or_, select, true
from sqlalchemy.orm import aliased

from imex.auth.permissions import Principal
from imex.db.models import (
    AuditEvent,
    Folder,
    FolderInstitution,
    FolderMember,
    FolderStudy,
    Instance,
    Institution,
    Node,
    Patient,
    Series,
    Study,
    Transfer,
    User,
    Worklist,
    utcnow,
)
from imex.errors import NotFound

DestNode = aliased(Node, name="dest_node")
SharedEntry = aliased(FolderStudy, name="shared_entry")  # its own name: queries may join FolderStudy too
DestInstitution = aliased(Institution, name="dest_institution")
SourceInstitution = aliased(Institution, name="source_institution")


class NotVisible(NotFound, LookupError):
    """The object does not exist, or the principal may not see it: both are answered 404."""


def transfer_clause(p: Principal):
    """Rows of a query joined with Transfer, Study and DestNode that `p` may see."""
    if p.is_system_admin:
        return true()
    if not p.can("transfers.view"):
        return false()
    return or_(Study.institution_id == p.institution_id, DestNode.institution_id == p.institution_id)


def transfers_query(p: Principal) -> Select:
    """Transfers with their study, patient, destination node and both institutions, scoped to `p`."""
    return (
        select(Transfer, Study, Patient, DestNode, DestInstitution, SourceInstitution)
        .join(Study, Study.id == Transfer.study_id)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(DestNode, DestNode.id == Transfer.destination_node_id)
        .join(DestInstitution, DestInstitution.id == DestNode.institution_id)
        .join(SourceInstitution, SourceInstitution.id == Study.institution_id)
        .where(transfer_clause(p))
    )


def study_clause(p: Principal):
    if p.is_system_admin:
        return true()
    if not (p.can("transfers.view") or p.can("studies.view")):
        return false()
    sent_here = exists(
        select(Transfer.id)
        .join(Node, Node.id == Transfer.destination_node_id)
        .where(Transfer.study_id == Study.id, Node.institution_id == p.institution_id)
    )
    if not p.can("studies.view"):
        return or_(Study.institution_id == p.institution_id, sent_here)
    return or_(
        Study.institution_id == p.institution_id,
        sent_here,
        exists(
            select(SharedEntry.id).where(
                SharedEntry.study_id == Study.id,
                SharedEntry.expires_at > utcnow(),
                SharedEntry.folder_id.in_(visible_folder_ids(p)),
            )
        ),
        viewing_clause(p),
    )


def viewing_clause(p: Principal):
    """A study fetched for viewing before import (locator): while it arrives and while it is cached, the
    institution that asked for it sees it (its users with studies.view), until the cache expires."""
    from imex.db.models import Retrieval

    asked = exists(
        select(Retrieval.id).where(
            Retrieval.study_uid == Study.study_uid,
            Retrieval.purpose == "view",
            Retrieval.institution_id == p.institution_id,
            Retrieval.state.not_in(("failed", "cancelled")),
        )
    )
    return and_(
        Study.route_state.in_(("receiving", "cached")),
        or_(Study.expires_at.is_(None), Study.expires_at > utcnow()),
        asked,
    )


def visible_folder_ids(p: Principal) -> Select:
    """Folders `p` sees: emergency folders their institution takes part in, elective ones they belong to."""
    if p.is_system_admin:
        return select(Folder.id)
    taking_part = select(FolderInstitution.folder_id).where(FolderInstitution.institution_id == p.institution_id)
    member = select(FolderMember.folder_id).where(FolderMember.user_id == p.user_id)
    return select(Folder.id).where(
        or_(
            and_(Folder.kind == "emergency", Folder.id.in_(taking_part)),
            and_(Folder.kind == "elective", Folder.id.in_(member), Folder.id.in_(taking_part)),
        )
    )


def studies_query(p: Principal) -> Select:
    return (
        select(Study, Patient, SourceInstitution)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(SourceInstitution, SourceInstitution.id == Study.institution_id)
        .where(study_clause(p))
    )


def own_institution_clause(p: Principal, column):
    """For objects an institution owns (nodes, users, roles, worklists, quarantined studies)."""
    return true() if p.is_system_admin else column == p.institution_id


def nodes_query(p: Principal) -> Select:
    return select(Node, Institution).join(Institution).where(own_institution_clause(p, Node.institution_id))


def users_query(p: Principal) -> Select:
    return select(User, Institution).join(Institution).where(own_institution_clause(p, User.institution_id))


def institutions_query(p: Principal) -> Select:
    return select(Institution).where(own_institution_clause(p, Institution.id))


def worklists_query(p: Principal) -> Select:
    return select(Worklist).where(own_institution_clause(p, Worklist.institution_id))


def quarantine_query(p: Principal) -> Select:
    return studies_query(p).where(Study.route_state == "quarantined", own_institution_clause(p, Study.institution_id))


def audit_institution(p: Principal) -> int | None:
    """Whose audit events `p` may read: None means every institution's (system admins)."""
    return None if p.is_system_admin else p.institution_id


def audit_clause(p: Principal):
    scope = audit_institution(p)
    return true() if scope is None else AuditEvent.institution_id == scope


def direction_clause(p: Principal, direction: str):
    """incoming: sent to p's institution; outgoing: sent by it; anything else: both."""
    if direction == "incoming":
        return DestNode.institution_id == p.institution_id
    if direction == "outgoing":
        return Study.institution_id == p.institution_id
    return true()


def worklist_clause(worklist: Worklist):
    """A virtual node: the incoming transfers of its institution that match its conditions."""
    conditions = [DestNode.institution_id == worklist.institution_id]
    modalities = worklist.modalities.split()
    if modalities:
        conditions.append(or_(*(Study.modalities.like(f"%{m}%") for m in modalities)))
    if worklist.description_pattern:
        pattern = worklist.description_pattern.replace("%", r"\%").replace("_", r"\_")
        pattern = pattern.replace("*", "%").replace("?", "_")
        conditions.append(Study.description.ilike(pattern, escape="\\"))
    sources = [s.upper() for s in worklist.source_ods.split()]
    if sources:
        conditions.append(SourceInstitution.ods_code.in_(sources))
    return and_(*conditions)


def arrivals_on_worklist(worklist, transfer_id: int) -> Select:
    """The transfer, when it is on the worklist (used to decide who is notified of an arrival)."""
    return (
        select(Transfer.id)
        .join(Study, Study.id == Transfer.study_id)
        .join(DestNode, DestNode.id == Transfer.destination_node_id)
        .join(SourceInstitution, SourceInstitution.id == Study.institution_id)
        .where(Transfer.id == transfer_id, worklist_clause(worklist))
    )


# -- the locator: entries of institutions whose holdings the principal's institution may discover -----------


def discoverable_clause(p: Principal, institution_id):
    """Institutions (by the `institution_id` column given) whose holdings `p`'s institution may discover
    in the locator: its own, and those discoverable by everyone, or (restricted) by `p`'s institution as a
    named partner or a member of a named network."""
    from imex.db.models import LocatorNetworkMember, LocatorPartner, LocatorPolicy, LocatorSharedNetwork

    if not p.can("locator.search"):
        return false()
    if p.is_system_admin:
        return true()
    partner = exists(
        select(LocatorPartner.id).where(
            LocatorPartner.institution_id == institution_id, LocatorPartner.partner_id == p.institution_id
        )
    )
    in_network = exists(
        select(LocatorSharedNetwork.id)
        .join(LocatorNetworkMember, LocatorNetworkMember.network_id == LocatorSharedNetwork.network_id)
        .where(
            LocatorSharedNetwork.institution_id == institution_id,
            LocatorNetworkMember.institution_id == p.institution_id,
        )
    )
    policy = exists(
        select(LocatorPolicy.id).where(
            LocatorPolicy.institution_id == institution_id,
            or_(LocatorPolicy.mode == "everyone", and_(LocatorPolicy.mode == "restricted", or_(partner, in_network))),
        )
    )
    return or_(institution_id == p.institution_id, policy)


def locator_clause(p: Principal):
    """Locator entries `p` may find: those of the institutions `p` may discover."""
    from imex.db.models import LocatorEntry

    return discoverable_clause(p, LocatorEntry.institution_id)


def undiscoverable_query(p: Principal) -> Select:
    """Institutions whose holdings `p` may not search (they keep themselves undiscoverable to `p`): named
    on an empty result, so that "0 studies found" is not read as "the patient has no imaging"."""
    return select(Institution).where(~discoverable_clause(p, Institution.id)).order_by(Institution.name)


def locator_query(p: Principal) -> Select:
    """(LocatorEntry, Institution) that `p` may find."""
    from imex.db.models import LocatorEntry

    return (
        select(LocatorEntry, Institution)
        .join(Institution, Institution.id == LocatorEntry.institution_id)
        .where(locator_clause(p))
    )


# -- DICOMweb and the viewer: series and instances are visible with their study ----------------------------


def series_query(p: Principal) -> Select:
    """(Study, Patient, SourceInstitution, Series) of the studies `p` may see."""
    return studies_query(p).add_columns(Series).join(Series, Series.study_id == Study.id)


def instances_query(p: Principal) -> Select:
    """(Study, Patient, SourceInstitution, Series, Instance) of the studies `p` may see."""
    return series_query(p).add_columns(Instance).join(Instance, Instance.series_id == Series.id)


def request_clause(p: Principal):
    """An image request is visible to the institution that asked and the one asked, nobody else."""
    from imex.db.models import ImageRequest

    if p.is_system_admin:
        return true()
    return or_(
        ImageRequest.requesting_institution_id == p.institution_id,
        ImageRequest.source_institution_id == p.institution_id,
    )


def requests_query(p: Principal) -> Select:
    """Image requests `p` may see (the ORM row)."""
    from imex.db.models import ImageRequest

    return select(ImageRequest).where(request_clause(p))


def foreign_study_clause(p: Principal):
    """Studies `p` may not add instances to (STOW-RS): those another institution sent."""
    return false() if p.is_system_admin else Study.institution_id != p.institution_id


# -- exchanges: transactions, their messages and attachments; the PACS a user may search ---------------------


def transaction_clause(p: Principal):
    """A transaction is visible to permitted users of the institution that sent it and of the one it goes to."""
    from imex.db.models import ExchangeTransaction

    if p.is_system_admin:
        return true()
    if not p.can("transfers.view"):
        return false()
    return or_(
        ExchangeTransaction.source_institution_id == p.institution_id,
        ExchangeTransaction.destination_institution_id == p.institution_id,
    )


def transactions_query(p: Principal) -> Select:
    from imex.db.models import ExchangeTransaction

    return select(ExchangeTransaction).where(transaction_clause(p))


def attachments_query(p: Principal) -> Select:
    """(TransactionAttachment, ExchangeTransaction) of the transactions `p` may see."""
    from imex.db.models import ExchangeTransaction, TransactionAttachment

    return (
        select(TransactionAttachment, ExchangeTransaction)
        .join(ExchangeTransaction, ExchangeTransaction.id == TransactionAttachment.transaction_id)
        .where(transaction_clause(p))
    )


def searchable_nodes_query(p: Principal) -> Select:
    """Nodes `p` may search and retrieve from: their own institution's, with query/retrieve on."""
    if not (p.is_system_admin or p.can("studies.send")):
        return select(Node).where(false())
    return select(Node).where(
        Node.query_retrieve.is_(True), Node.enabled.is_(True), own_institution_clause(p, Node.institution_id)
    )


def upload_clause(p: Principal):
    """Uploads from the browser: each is its creator's, and seen by their institution's admins."""
    from imex.db.models import Upload

    if p.is_system_admin:
        return true()
    if p.can("users.manage"):
        return or_(Upload.user_id == p.user_id, Upload.institution_id == p.institution_id)
    return Upload.user_id == p.user_id
