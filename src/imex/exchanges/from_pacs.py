"""Flow 3, the pre-authorised transfer: a user sends studies found in their own institution's PACS to
another institution. One transaction carries them; the hub C-MOVEs each study to itself (a retrieval) and
the router hook sends it on when it has arrived. The destination's followers are told at once.

The caller has checked that the PACS node is one of the user's institution's searchable nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Institution, Node, User, transactions
from imex.errors import Invalid, NotFound
from imex.exchanges import messages, retrievals
from imex.exchanges.transactions import open_transaction
from imex.routing import priority as priorities

STUDY_UID = re.compile(r"^[0-9.]{1,64}$")


@dataclass(frozen=True)
class Sent:
    transaction_id: int
    studies: int


def send_from_pacs(
    s: Session,
    node_id: int,
    study_uids: list[str],
    destination_ods: str,
    actor: Principal,
    *,
    priority: str = "routine",
    recipient: str = "",
    recipient_user: str = "",
    subject: str = "",
    message: str = "",
) -> Sent:
    """Open a pre-authorised transaction from the PACS `node_id` to the institution `destination_ods` and
    queue one retrieval per study; audited per study. Invalid for a malformed UID, an unknown priority,
    destination or recipient user, or the sender's own institution as destination."""
    node = s.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id}")
    uids = list(dict.fromkeys(u.strip() for u in study_uids))
    bad = [u for u in uids if not STUDY_UID.match(u)]
    if bad:
        raise Invalid(f"not a study instance UID: {bad[0][:70]!r}")
    try:
        level = priorities.parse(priority)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    dest = s.scalar(select(Institution).where(Institution.ods_code == destination_ods.strip().upper()))
    if dest is None:
        raise Invalid(f"no institution {destination_ods[:16]!r}")
    if dest.id == node.institution_id:
        raise Invalid("choose another institution to send to")
    recipient_user_id = None
    if recipient_user.strip():
        recipient_user_id = s.scalar(
            select(User.id).where(User.username == recipient_user.strip(), User.institution_id == dest.id)
        )
        if recipient_user_id is None:
            raise Invalid(f"{dest.ods_code} has no user {recipient_user[:64]!r}")
    conn = s.connection()
    tid = open_transaction(
        conn,
        kind="preauthorised",
        source_institution_id=node.institution_id,
        destination_institution_id=dest.id,
        sender_user_id=actor.user_id,
        sender_name=actor.username,
        study_uids=uids,
        subject=subject,
        message=message,
        priority=level,
        recipient=recipient.strip() or None,
        recipient_user_id=recipient_user_id,
    )
    for uid in uids:
        retrievals.enqueue(
            conn,
            node_id=node.id,
            study_uid=uid,
            purpose="transfer",
            transaction_id=tid,
            institution_id=node.institution_id,
            requested_by=actor.username,
        )
    tx = conn.execute(select(transactions).where(transactions.c.id == tid)).one()
    messages.tell(conn, tx, dest.id, node.institution_id, "New exchange")
    for uid in uids:
        audit.record(
            s,
            "exchange.send",
            object_type="transaction",
            object_id=tid,
            study_uid=uid,
            detail=f"pre-authorised from {node.name} to {dest.ods_code}",
            **actor.audit_fields(),
        )
    return Sent(tid, len(uids))
