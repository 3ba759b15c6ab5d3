"""Named recipients: the person or team a transfer is for (free text, and where known a user of the
destination institution). That user is told directly; an institution can refuse transfers that name
nobody, in which case they wait in state `held` until the sender names one."""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from imex.db import Database, utcnow
from imex.db.models import institutions, nodes, studies, transfers, users
from imex.errors import Conflict, Invalid
from imex.jobs import engine
from imex.notify import wording
from imex.notify.inbox import notify_users
from imex.routing.priority import name as priority_name
from imex.routing.queue import DELIVERY, record

HELD = "held"
NEEDS_RECIPIENT = "the destination institution requires a named recipient; name one in the portal"
RECIPIENT_KIND = "transfer.for_you"


def missing_recipient(conn: Connection, transfer_id: int) -> bool:
    """True when the destination's institution requires a recipient and the transfer names none."""
    row = conn.execute(
        select(transfers.c.recipient, transfers.c.recipient_user_id, institutions.c.require_recipient)
        .join(nodes, nodes.c.id == transfers.c.destination_node_id)
        .join(institutions, institutions.c.id == nodes.c.institution_id)
        .where(transfers.c.id == transfer_id)
    ).one()
    return bool(row.require_recipient) and not (row.recipient or row.recipient_user_id)


def hold(db: Database, transfer_id: int, worker: str) -> bool:
    """Put a transfer this worker claimed on hold until it names a recipient (the attempt does not count)."""
    with db.engine.begin() as conn:
        held = engine.finish(
            conn, DELIVERY, transfer_id, worker, HELD, attempts=transfers.c.attempts - 1, last_error=NEEDS_RECIPIENT
        )
        if held:
            record(conn, transfer_id, "held", NEEDS_RECIPIENT)
    return bool(held)


def destination_user(conn: Connection, transfer_id: int, user_id: int):
    """The enabled user `user_id` if they belong to the transfer's destination institution, else None."""
    inst = conn.execute(
        select(nodes.c.institution_id)
        .join(transfers, transfers.c.destination_node_id == nodes.c.id)
        .where(transfers.c.id == transfer_id)
    ).scalar_one()
    return conn.execute(
        select(users.c.id, users.c.email, users.c.email_events).where(
            users.c.id == user_id, users.c.institution_id == inst, users.c.disabled.is_(False)
        )
    ).first()


def notify_recipient(conn: Connection, transfer_id: int) -> int:
    """Tell the named user directly that a study is coming for them (no patient identifiers)."""
    t = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).one()
    if t.recipient_user_id is None:
        return 0
    user = conn.execute(
        select(users.c.id, users.c.email, users.c.email_events).where(
            users.c.id == t.recipient_user_id, users.c.disabled.is_(False)
        )
    ).first()
    if user is None:
        return 0
    study = conn.execute(
        select(studies.c.modalities, studies.c.study_date, institutions.c.name, institutions.c.ods_code)
        .join(institutions, institutions.c.id == studies.c.institution_id)
        .where(studies.c.id == t.study_id)
    ).one()
    level = priority_name(t.priority)
    title = (
        f"{level.capitalize()}: {wording.study(study.modalities, study.study_date)} "
        f"from {study.name} ({study.ods_code}) is for you"
    )
    link = f"/transfers/{t.id}"
    body = f"{title}.\n\nTransfer {t.id}: sign in to the imex portal to see it ({link}).\n"
    # a named recipient always gets the e-mail: they were chosen by name, not by a subscription
    return notify_users(conn, [_Always(user)], RECIPIENT_KIND, title, link, f"[imex] {title}", body)


class _Always:
    """A user row whose e-mail preferences include the recipient notice."""

    def __init__(self, row) -> None:
        self.id = row.id
        self.email = row.email
        self.email_events = RECIPIENT_KIND


class RecipientError(Invalid, ValueError):
    """A change that does not apply: a finished transfer, or a user who is not at the destination."""


class TransferFinal(RecipientError, Conflict):
    """The transfer is finished (delivered, confirmed or cancelled): its priority and recipient stay."""


def change(
    db: Database,
    transfer_id: int,
    *,
    priority: int | None,
    recipient: str | None,
    recipient_user_id: int | None,
    actor: str,
) -> list[str]:
    """Set a transfer's priority and/or named recipient; a transfer held for want of a recipient is
    released, and a newly named user is told. Returns what changed, for the audit."""
    changed: list[str] = []
    with db.engine.begin() as conn:
        t = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).one()
        if t.state in ("delivered", "confirmed", "cancelled"):
            raise TransferFinal(f"transfer {transfer_id} is {t.state}; its priority and recipient are final")
        values: dict = {}
        if priority is not None and priority != t.priority:
            values["priority"] = priority
            changed.append(f"priority {priority_name(t.priority)} -> {priority_name(priority)}")
        if recipient is not None and recipient.strip() != (t.recipient or ""):
            values["recipient"] = recipient.strip() or None
            changed.append(f"recipient '{recipient.strip()}'")
        notify = False
        if recipient_user_id is not None and recipient_user_id != t.recipient_user_id:
            user = destination_user(conn, transfer_id, recipient_user_id)
            if user is None:
                raise RecipientError(f"user {recipient_user_id} is no enabled user of the destination institution")
            values["recipient_user_id"] = recipient_user_id
            changed.append(f"recipient user {recipient_user_id}")
            notify = True
        if not values:
            return []
        values["updated_at"] = utcnow()
        conn.execute(update(transfers).where(transfers.c.id == transfer_id).values(**values))
        record(conn, transfer_id, "changed", f"{'; '.join(changed)} by {actor}")
        if t.state == HELD and t.last_error == NEEDS_RECIPIENT and not missing_recipient(conn, transfer_id):
            conn.execute(
                update(transfers)
                .where(transfers.c.id == transfer_id)
                .values(state="pending", next_attempt_at=utcnow(), last_error=None)
            )
            record(conn, transfer_id, "released", "a recipient is named")
            changed.append("released")
        if notify:
            notify_recipient(conn, transfer_id)
    return changed
