"""Named recipients: the person or team a transfer is for (free text, and where known a user of the
destination institution). That user is told directly; an institution can refuse transfers that name
nobody, in which case they wait in state `held` until the sender names one."""
from __future__ import annotations

from sqlalchemy import Connection, select, update

from imex.db import Database, utcnow
from imex.db.tables import institutions, nodes, studies, transfers, users
from imex.notify.inbox import notify_users
from imex.routing.priority import name as priority_name
from imex.routing.queue import record

HELD = "held"
NEEDS_RECIPIENT = "the destination institution requires a named recipient; name one in the portal"
RECIPIENT_KIND = "transfer.for_you"


def missing_recipient(conn: Connection, transfer_id: int) -> bool:
    """True when the destination's institution requires a recipient and the transfer names none."""
    row = conn.execute(select(transfers.c.recipient, transfers.c.recipient_user_id,
                              institutions.c.require_recipient)
                       .join(nodes, nodes.c.id == transfers.c.destination_node_id)
                       .join(institutions, institutions.c.id == nodes.c.institution_id)
                       .where(transfers.c.id == transfer_id)).one()
    return bool(row.require_recipient) and not (row.recipient or row.recipient_user_id)


def hold(db: Database, transfer_id: int, worker: str) -> bool:
    """Put a transfer this worker claimed on hold until it names a recipient (the attempt does not count)."""
    with db.engine.begin() as conn:
        held = conn.execute(update(transfers).where(
            transfers.c.id == transfer_id, transfers.c.state == "sending", transfers.c.claimed_by == worker)
            .values(state=HELD, claimed_by=None, lease_until=None, attempts=transfers.c.attempts - 1,
                    last_error=NEEDS_RECIPIENT, updated_at=utcnow())).rowcount
        if held:
            record(conn, transfer_id, "held", NEEDS_RECIPIENT)
    return bool(held)


def destination_user(conn: Connection, transfer_id: int, user_id: int):  # type: ignore[no-untyped-def]
    """The enabled user `user_id` if they belong to the transfer's destination institution, else None."""
    inst = conn.execute(select(nodes.c.institution_id).join(transfers, transfers.c.destination_node_id == nodes.c.id)
                        .where(transfers.c.id == transfer_id)).scalar_one()
    return conn.execute(select(users.c.id, users.c.email, users.c.email_events).where(
        users.c.id == user_id, users.c.institution_id == inst, users.c.disabled.is_(False))).first()


def notify_recipient(conn: Connection, transfer_id: int) -> int:
    """Tell the named user directly that a study is coming for them (no patient identifiers)."""
    t = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).one()
    if t.recipient_user_id is None:
        return 0
    user = conn.execute(select(users.c.id, users.c.email, users.c.email_events).where(
        users.c.id == t.recipient_user_id, users.c.disabled.is_(False))).first()
    if user is None:
        return 0
    study = conn.execute(select(studies.c.modalities, studies.c.study_date, institutions.c.name,
                                institutions.c.ods_code)
                         .join(institutions, institutions.c.id == studies.c.institution_id)
                         .where(studies.c.id == t.study_id)).one()
    level = priority_name(t.priority)
    title = (f"{level.capitalize()}: {study.modalities or 'study'} of {study.study_date or 'unknown date'} "
             f"from {study.name} ({study.ods_code}) is for you")
    link = f"/transfers/{t.id}"
    body = f"{title}.\n\nTransfer {t.id}: sign in to the imex portal to see it ({link}).\n"
    # a named recipient always gets the e-mail: they were chosen by name, not by a subscription
    return notify_users(conn, [_Always(user)], RECIPIENT_KIND, title, link, f"[imex] {title}", body)


class _Always:
    """A user row whose e-mail preferences include the recipient notice."""

    def __init__(self, row) -> None:  # type: ignore[no-untyped-def]
        self.id = row.id
        self.email = row.email
        self.email_events = RECIPIENT_KIND
