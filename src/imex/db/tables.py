"""The Core `Table` objects of the models, for the hot paths that use SQL expressions rather than the ORM."""
from __future__ import annotations

from sqlalchemy import Table

from imex.db.models import (
    AuditEvent,
    Notification,
    Role,
    RoleGrant,
    User,
    WebSession,
    Worklist,
    Email,
    Instance,
    Institution,
    Node,
    Patient,
    Series,
    Study,
    Transfer,
    TransferEvent,
    TransferItem,
)


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


institutions = _table(Institution)
nodes = _table(Node)
patients = _table(Patient)
studies = _table(Study)
series = _table(Series)
instances = _table(Instance)
transfers = _table(Transfer)
items = _table(TransferItem)
events = _table(TransferEvent)
emails = _table(Email)
users = _table(User)
roles = _table(Role)
role_grants = _table(RoleGrant)
web_sessions = _table(WebSession)
audit_events = _table(AuditEvent)
notifications = _table(Notification)
worklists = _table(Worklist)

# HL7 reports
from imex.db.models import Report, ReportDelivery, ReportQuery, RisEndpoint  # noqa: E402

ris_endpoints = _table(RisEndpoint)
reports = _table(Report)
report_deliveries = _table(ReportDelivery)
report_queries = _table(ReportQuery)

# header harmonisation
from imex.db.models import Reconciliation  # noqa: E402

reconciliations = _table(Reconciliation)

# retention
from imex.db.models import Tombstone  # noqa: E402

tombstones = _table(Tombstone)

# sharing folders
from imex.db.models import Folder, FolderInstitution, FolderMember, FolderStudy  # noqa: E402

folders = _table(Folder)
folder_institutions = _table(FolderInstitution)
folder_members = _table(FolderMember)
folder_studies = _table(FolderStudy)
