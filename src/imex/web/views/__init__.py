"""How the portal shows rows: one dictionary shape per object, shared by the JSON API and the pages, so a
page never shows what the API would not. The modules of this package (named like web/api/ and web/pages/)
hold the scoped reads both of them render: an API handler and its page call the same function.

This module imports nothing of imex.web, so the error pages can use it without an import cycle."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.db.models import Notification
from imex.notify import wording
from imex.routing.priority import name as priority_name


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


person_name = wording.person  # DICOM PN as a person reads it: "JONES, Alan"

# audit actions as the "recent activity" lists say them; others are spelt out from their code
_ACTIONS = {
    "auth.login": "Signed in",
    "auth.logout": "Signed out",
    "auth.login_failed": "Sign-in failed",
    "auth.password_ok": "Password accepted",
    "auth.token": "Created an API token",
    "auth.token_revoke": "Revoked an API token",
    "auth.totp_failed": "Second-factor code refused",
    "auth.locked": "Account locked",
    "study.view": "Viewed a study",
    "study.download": "Downloaded a study",
    "study.store": "Stored a study",
    "transfer.retry": "Retried a transfer",
    "transfer.cancel": "Cancelled a transfer",
    "transfer.priority": "Changed a transfer's priority",
    "transfer.reconcile": "Released a held transfer",
    "destination.retry": "Retried a destination",
    "transfers.export": "Exported transfers",
    "request.create": "Requested images",
    "audit.search": "Searched the audit trail",
    "audit.export": "Exported the audit trail",
    "user.add": "Added a user",
    "user.disable": "Disabled a user",
    "user.enable": "Enabled a user",
    "user.password": "Changed a password",
    "node.echo": "Tested a node",
    "locator.search": "Searched for a patient's imaging",
    "pacs.search": "Searched a PACS",
}


def action_label(action: str) -> str:
    """An audit action code (`transfer.retry`) in words."""
    known = _ACTIONS.get(action)
    if known:
        return known
    words = action.replace("_", " ").split(".")
    return " ".join(words).capitalize()


def transfer_row(p: Principal, transfer, study, patient, dest_node, dest_inst, source_inst) -> dict[str, Any]:
    incoming = dest_node.institution_id == p.institution_id
    return {
        "id": transfer.id,
        "state": transfer.state,
        "direction": "incoming" if incoming else "outgoing",
        "priority": transfer.priority,
        "patient_name": person_name(patient.name),
        "patient_id": patient.patient_id,
        "birth_date": patient.birth_date,
        "study_id": study.id,
        "study_uid": study.study_uid,
        "accession_number": study.accession_number,
        "study_date": study.study_date,
        "modalities": study.modalities,
        "description": study.description,
        "images": study.num_instances,
        "source": {"ods": source_inst.ods_code, "name": source_inst.name},
        "destination": {"ods": dest_inst.ods_code, "name": dest_inst.name, "node": dest_node.name},
        "received_at": iso(study.first_received_at),
        "last_received_at": iso(study.last_received_at),
        "delivered_at": iso(transfer.delivered_at),
        "confirmed_at": iso(transfer.confirmed_at),
        "instances_sent": transfer.instances_sent,
        "instances_total": transfer.instances_total,
        "attempts": transfer.attempts,
        "last_error": transfer.last_error,
        "next_attempt_at": iso(transfer.next_attempt_at) if transfer.state == "pending" else None,
        # waiting after a failed attempt: shown from the first failure, not only once it gives up
        "retrying": transfer.state in ("pending", "sending") and transfer.attempts > 0 and bool(transfer.last_error),
        "reason": transfer.reason,
        "updated_at": iso(transfer.updated_at),
        "expires_at": iso(study.expires_at),
        "priority_name": priority_name(transfer.priority),
        "recipient": transfer.recipient,
        "recipient_user_id": transfer.recipient_user_id,
        "escalated": transfer.escalated_at is not None
        and transfer.state not in ("delivered", "confirmed", "cancelled"),
    }


def study_row(study, patient, source_inst) -> dict[str, Any]:
    return {
        "id": study.id,
        "study_uid": study.study_uid,
        "patient_name": person_name(patient.name),
        "patient_id": patient.patient_id,
        "birth_date": patient.birth_date,
        "sex": patient.sex,
        "accession_number": study.accession_number,
        "study_date": study.study_date,
        "modalities": study.modalities,
        "description": study.description,
        "referring_physician": person_name(study.referring_physician),
        "series": study.num_series,
        "images": study.num_instances,
        "source": {"ods": source_inst.ods_code, "name": source_inst.name},
        "route_state": study.route_state,
        "quarantine_reason": study.quarantine_reason,
        "received_at": iso(study.first_received_at),
        "last_received_at": iso(study.last_received_at),
    }


def node_row(node, inst) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "ae_title": node.ae_title,
        "host": node.host,
        "port": node.port,
        "institution": inst.ods_code,
        "alias": node.alias,
        "contact_email": node.contact_email,
        "destination": node.destination,
        "max_associations": node.max_associations,
        "enabled": node.enabled,
        "confirm": node.confirm,
        "query_retrieve": node.query_retrieve,
        "allow_find": node.allow_find,
        "allow_move": node.allow_move,
        "allow_get": node.allow_get,
    }


def user_row(user, inst, roles: list[str]) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "institution": inst.ods_code,
        "roles": roles,
        "disabled": user.disabled,
        "locked": user.locked_until is not None and user.locked_until > dt.datetime.utcnow(),
        "second_factor": user.totp_enabled,
        "certificate_subject": user.certificate_subject,
        "managed_by": user.identity_provider,  # an [[oidc]] provider or [[scim]] directory
        "last_login_at": iso(user.last_login_at),
        "created_at": iso(user.created_at),
    }


def audit_row(e) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "action": e.action,
        "outcome": e.outcome,
        "username": e.username,
        "institution_id": e.institution_id,
        "institution": getattr(e, "institution", None),
        "ip": e.ip,
        "study_uid": e.study_uid,
        "patient_id": e.patient_id,
        "patient_name": person_name(getattr(e, "patient_name", None) or ""),
        "object_type": e.object_type,
        "object_id": e.object_id,
        "detail": e.detail,
    }


def worklist_row(w) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "modalities": w.modalities,
        "description_pattern": w.description_pattern,
        "source_ods": w.source_ods,
    }


def unread_count(s: Session | Connection, user_id: int) -> int:
    """The user's unread notifications (every page's header shows the number)."""
    return (
        s.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        )
        or 0
    )
