"""The database schema, one module per concern, all on one `Base`.

Importing this package imports every concern module, so `Base.metadata` holds every table (Alembic's
autogenerate, the migrations test and `create_all` rely on that), and re-exports every model, every Core
table (`transfers = Transfer.__table__`, for the SQL-expression hot paths) and the constants the code checks
values against: `from imex.db.models import Transfer, transfers`.

The concern modules import only `base`: their foreign keys name tables by string, which SQLAlchemy resolves on
the shared metadata, so they need no imports of each other and cannot form a cycle. A module is not named after
one of its tables (`sharing`, not `folders`; `reporting`, not `reports`; `upload`, not `uploads`): the
re-exported table would shadow the submodule as an attribute of this package.
"""

from __future__ import annotations

from imex.db.models.accounts import Role, RoleGrant, User, WebSession, role_grants, roles, users, web_sessions
from imex.db.models.audit import AuditEvent, audit_events
from imex.db.models.base import Base, core_table, utcnow
from imex.db.models.commitment import CommitmentRequest, commitment_requests
from imex.db.models.delivery import Transfer, TransferEvent, TransferItem, events, items, transfers
from imex.db.models.directory import (
    Institution,
    Node,
    RisEndpoint,
    Worklist,
    institutions,
    nodes,
    ris_endpoints,
    worklists,
)
from imex.db.models.exchanges import (
    REQUEST_STATES,
    RETRIEVAL_STATES,
    ExchangeTransaction,
    ImageRequest,
    RequestEvent,
    Retrieval,
    TransactionAttachment,
    TransactionMessage,
    TransactionStudy,
    image_requests,
    request_events,
    retrievals,
    transaction_attachments,
    transaction_messages,
    transaction_studies,
    transactions,
)
from imex.db.models.harmonise import Reconciliation, reconciliations
from imex.db.models.index import Instance, Patient, Series, Study, instances, patients, series, studies
from imex.db.models.links import LINK_MODES, LinkCode, LinkSession, StudyLink, link_codes, link_sessions, study_links
from imex.db.models.locator import (
    DISCOVERABILITY,
    ENTRY_SOURCES,
    LocatorEntry,
    LocatorMark,
    LocatorNetwork,
    LocatorNetworkMember,
    LocatorPartner,
    LocatorPolicy,
    LocatorSharedNetwork,
    LocatorSweep,
    locator_entries,
    locator_marks,
    locator_network_members,
    locator_networks,
    locator_partners,
    locator_policies,
    locator_shared_networks,
    locator_sweeps,
)
from imex.db.models.notify import Email, Notification, emails, notifications
from imex.db.models.reporting import Report, ReportDelivery, ReportQuery, report_deliveries, report_queries, reports
from imex.db.models.retention import Tombstone, tombstones
from imex.db.models.sharing import (
    Folder,
    FolderInstitution,
    FolderMember,
    FolderStudy,
    folder_institutions,
    folder_members,
    folder_studies,
    folders,
)
from imex.db.models.upload import FILE_KINDS, UPLOAD_STATES, Upload, UploadFile, upload_files, uploads

__all__ = [
    "Base",
    "core_table",
    "utcnow",
    "Institution",
    "institutions",
    "Node",
    "nodes",
    "RisEndpoint",
    "ris_endpoints",
    "Worklist",
    "worklists",
    "Patient",
    "patients",
    "Study",
    "studies",
    "Series",
    "series",
    "Instance",
    "instances",
    "User",
    "users",
    "Role",
    "roles",
    "RoleGrant",
    "role_grants",
    "WebSession",
    "web_sessions",
    "Transfer",
    "transfers",
    "TransferItem",
    "items",
    "TransferEvent",
    "events",
    "AuditEvent",
    "audit_events",
    "Email",
    "emails",
    "Notification",
    "notifications",
    "Report",
    "reports",
    "ReportDelivery",
    "report_deliveries",
    "ReportQuery",
    "report_queries",
    "Reconciliation",
    "reconciliations",
    "Tombstone",
    "tombstones",
    "Folder",
    "folders",
    "FolderInstitution",
    "folder_institutions",
    "FolderMember",
    "folder_members",
    "FolderStudy",
    "folder_studies",
    "CommitmentRequest",
    "commitment_requests",
    "REQUEST_STATES",
    "RETRIEVAL_STATES",
    "ExchangeTransaction",
    "transactions",
    "TransactionStudy",
    "transaction_studies",
    "TransactionMessage",
    "transaction_messages",
    "TransactionAttachment",
    "transaction_attachments",
    "ImageRequest",
    "image_requests",
    "RequestEvent",
    "request_events",
    "Retrieval",
    "retrievals",
    "LINK_MODES",
    "StudyLink",
    "study_links",
    "LinkCode",
    "link_codes",
    "LinkSession",
    "link_sessions",
    "ENTRY_SOURCES",
    "DISCOVERABILITY",
    "LocatorEntry",
    "locator_entries",
    "LocatorSweep",
    "locator_sweeps",
    "LocatorPolicy",
    "locator_policies",
    "LocatorPartner",
    "locator_partners",
    "LocatorNetwork",
    "locator_networks",
    "LocatorNetworkMember",
    "locator_network_members",
    "LocatorSharedNetwork",
    "locator_shared_networks",
    "LocatorMark",
    "locator_marks",
    "UPLOAD_STATES",
    "FILE_KINDS",
    "Upload",
    "uploads",
    "UploadFile",
    "upload_files",
]
