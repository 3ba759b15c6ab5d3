"""Escalation: an emergency transfer not delivered within `priority.escalate_after_seconds` alerts the
source, the destination and the hub's admins (e-mail and in-app), once, recorded as a transfer event;
the portal shows it red until it is delivered."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import Connection, select, update

from imex.db import Database, utcnow
from imex.db.models import role_grants, roles, transfers, users
from imex.notify import wording
from imex.notify.email import queue_email, transfer_parties
from imex.notify.inbox import notify_users, users_with_permission
from imex.routing.priority import EMERGENCY
from imex.routing.queue import record

log = logging.getLogger("imex.routing")

ESCALATED = "transfer.escalated"
UNFINISHED = ("pending", "sending", "failed", "held")


def _admins(conn: Connection) -> list:
    """Enabled users whose roles grant system.admin, at any institution."""
    rows = conn.execute(
        select(users.c.id, users.c.email, users.c.email_events, roles.c.permissions)
        .join(role_grants, role_grants.c.user_id == users.c.id)
        .join(roles, roles.c.id == role_grants.c.role_id)
        .where(users.c.disabled.is_(False))
    ).all()
    return list({r.id: r for r in rows if "system.admin" in r.permissions.split()}.values())


def _alert(conn: Connection, transfer_id: int, waited: float) -> None:
    t, study, dest, source = transfer_parties(conn, transfer_id)
    title = (
        f"EMERGENCY transfer {t.id} from {source.ods_code} to {dest.ods_code} not delivered after "
        f"{waited / 60:.0f} min ({t.state})"
    )
    body = (
        f"{title}.\n\n{wording.study(study.modalities, study.study_date, study.num_instances)}, "
        f"from {source.name} to {dest.inst} (node {dest.name}).\n"
        f"{t.instances_sent} of {t.instances_total} instances sent; last error: {t.last_error or 'none'}.\n\n"
        f"See /transfers/{t.id} in the imex portal.\n"
    )
    watchers = {
        r.id: r
        for r in [
            *users_with_permission(conn, study.institution_id, "transfers.view"),
            *users_with_permission(conn, dest.institution_id, "transfers.view"),
            *_admins(conn),
        ]
    }
    notify_users(conn, list(watchers.values()), ESCALATED, title, f"/transfers/{t.id}")
    queue_email(
        conn,
        [
            source.contact_email or "",
            dest.contact_email or "",
            dest.inst_email or "",
            *[u.email for u in _admins(conn) if u.email],
        ],
        f"[imex] {title}",
        body,
    )


def escalate_overdue(db: Database, after_seconds: float) -> int:
    """Alert once for each emergency transfer still undelivered `after_seconds` after it was queued."""
    if after_seconds <= 0:
        return 0
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=after_seconds)
    due = (
        transfers.c.priority >= EMERGENCY,
        transfers.c.state.in_(UNFINISHED),
        transfers.c.escalated_at.is_(None),
        transfers.c.created_at <= cutoff,
    )
    with db.reader() as conn:
        ids = conn.execute(select(transfers.c.id).where(*due).limit(50)).scalars().all()
        conn.rollback()
    done = 0
    for transfer_id in ids:
        with db.engine.begin() as conn:
            # the guard on escalated_at makes it once only, even with several processes
            if not conn.execute(
                update(transfers).where(transfers.c.id == transfer_id, *due).values(escalated_at=now)
            ).rowcount:
                continue
            created = conn.execute(select(transfers.c.created_at).where(transfers.c.id == transfer_id)).scalar_one()
            waited = (now - created).total_seconds()
            record(conn, transfer_id, "escalated", f"emergency not delivered after {waited:.0f} s")
            _alert(conn, transfer_id, waited)
            done += 1
        log.warning("emergency transfer %s escalated: not delivered after %.0f s", transfer_id, after_seconds)
    return done
