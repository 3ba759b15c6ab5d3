"""In-app notifications (the portal's bell) and per-user e-mail, written in the transaction of the event
they report. Who hears of a transfer: users of the destination institution when it is delivered, users
of the source institution when it fails for good, in both cases only users who may see transfers.
E-mail to a user goes out only for the event kinds they chose in their preferences; like every imex
e-mail it carries no patient identifiers.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from imex.db import utcnow
from imex.db.models import (
    institutions,
    nodes,
    notifications,
    role_grants,
    roles,
    studies,
    transfers,
    users,
    worklists,
)
from imex.notify import wording
from imex.notify.email import queue_email

ARRIVED = "transfer.arrived"
FAILED = "transfer.failed"
EVENT_KINDS = {
    ARRIVED: "A study was delivered to my institution",
    FAILED: "A study my institution sent could not be delivered",
}


def users_with_permission(conn: Connection, institution_id: int, permission: str) -> list:
    """Enabled users of the institution whose roles grant `permission` (or system.admin)."""
    rows = conn.execute(
        select(users.c.id, users.c.email, users.c.email_events, users.c.notify_worklists, roles.c.permissions)
        .join(role_grants, role_grants.c.user_id == users.c.id)
        .join(roles, roles.c.id == role_grants.c.role_id)
        .where(users.c.institution_id == institution_id, users.c.disabled.is_(False))
    ).all()
    chosen: dict[int, object] = {}
    for r in rows:
        granted = set(r.permissions.split())
        if permission in granted or "system.admin" in granted:
            chosen[r.id] = r
    return list(chosen.values())


def _on_chosen_worklists(conn: Connection, transfer_id: int, user_rows: list) -> list:
    """Users who chose worklists hear of an arrival only when it is on one of them."""
    from imex.auth.scope import arrivals_on_worklist

    chosen = {int(w) for u in user_rows for w in (u.notify_worklists or "").split() if w.isdigit()}
    if not chosen:
        return user_rows
    matching = set()
    for worklist in conn.execute(select(worklists).where(worklists.c.id.in_(chosen))).all():
        if conn.execute(arrivals_on_worklist(worklist, transfer_id)).first() is not None:
            matching.add(worklist.id)
    return [
        u
        for u in user_rows
        if not (u.notify_worklists or "").split()
        or matching & {int(w) for w in u.notify_worklists.split() if w.isdigit()}
    ]


def notify_users(
    conn: Connection, user_rows: list, kind: str, title: str, link: str, email_subject: str = "", email_body: str = ""
) -> int:
    """One notification per user, and an e-mail to those who want this kind; returns how many."""
    now = utcnow()
    for u in user_rows:
        conn.execute(insert(notifications).values(user_id=u.id, at=now, kind=kind, title=title[:200], link=link[:200]))
    if email_subject:
        queue_email(
            conn,
            [u.email for u in user_rows if u.email and kind in (u.email_events or "").split()],
            email_subject,
            email_body,
        )
    return len(user_rows)


def queue_transfer_notice(conn: Connection, transfer_id: int, *, delivered: bool) -> int:
    """Tell the people waiting: the destination's users of a delivery, the source's of a failure."""
    t = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).one()
    study = conn.execute(select(studies).where(studies.c.id == t.study_id)).one()
    dest = conn.execute(
        select(nodes.c.institution_id, institutions.c.name, institutions.c.ods_code)
        .join(institutions)
        .where(nodes.c.id == t.destination_node_id)
    ).one()
    source = conn.execute(
        select(institutions.c.name, institutions.c.ods_code).where(institutions.c.id == study.institution_id)
    ).one()
    what = wording.study(study.modalities, study.study_date, study.num_instances)
    link = f"/transfers/{t.id}"
    if delivered:
        title = f"{what} arrived from {source.name} ({source.ods_code})"
        watchers = _on_chosen_worklists(conn, t.id, users_with_permission(conn, dest.institution_id, "transfers.view"))
        kind = ARRIVED
        subject = f"[imex] Images received from {source.name} ({source.ods_code})"
    else:
        title = f"{what} could not be delivered to {dest.name} ({dest.ods_code})"
        watchers = users_with_permission(conn, study.institution_id, "transfers.view")
        kind = FAILED
        subject = f"[imex] Transfer to {dest.name} ({dest.ods_code}) failed"
    body = f"{title}.\n\nTransfer {t.id}: sign in to the imex portal to see it ({link}).\n"
    return notify_users(conn, watchers, kind, title, link, subject, body)
