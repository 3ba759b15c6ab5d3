"""How each destination is doing, for the PACS managers who watch it: its last success, its last error,
what waits for it and since when, and since when it has been failing. A destination that has failed
for `alerts.destination_down_minutes` alerts its institution's contacts once per outage."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select, update

from imex.db import Database, utcnow
from imex.db.models import events, institutions, nodes, transfers
from imex.notify.email import queue_email
from imex.notify.inbox import notify_users, users_with_permission

log = logging.getLogger("imex.routing")

WAITING = ("pending", "sending", "held")
DOWN = "destination.down"


@dataclass(frozen=True)
class Health:
    """One destination node's state, from its transfers."""

    node_id: int
    node: str
    ae_title: str
    institution: str  # ODS code
    enabled: bool
    last_success: dt.datetime | None
    last_error: str
    last_error_at: dt.datetime | None
    waiting: int  # pending, sending or held
    retrying: int  # waiting after at least one failed attempt
    failed: int  # given up (dead letters)
    oldest_waiting: dt.datetime | None
    failing_since: dt.datetime | None  # first failed attempt since the last success, while still failing

    @property
    def status(self) -> str:
        """ok | failing | idle | disabled, for the badge a person reads first."""
        if not self.enabled:
            return "disabled"
        if self.failing_since is not None:
            return "failing"
        return "ok" if self.last_success is not None or self.waiting else "idle"


def _failing_since(conn: Connection, node_id: int, last_success: dt.datetime | None) -> dt.datetime | None:
    """When the node's current run of failures began: the first failed attempt after its last success,
    counted only while a transfer to it still waits after a failure or has failed for good."""
    still = conn.execute(
        select(func.count())
        .select_from(transfers)
        .where(
            transfers.c.destination_node_id == node_id,
            or_(
                and_(transfers.c.state.in_(("pending", "sending")), transfers.c.attempts > 0),
                transfers.c.state == "failed",
            ),
            transfers.c.last_error.is_not(None),
        )
    ).scalar()
    if not still:
        return None
    since = select(func.min(events.c.at)).join(transfers, transfers.c.id == events.c.transfer_id)
    since = since.where(transfers.c.destination_node_id == node_id, events.c.event.in_(("retry-scheduled", "failed")))
    if last_success is not None:
        since = since.where(events.c.at > last_success)
    return conn.execute(since).scalar()


def destinations(conn: Connection, institution_id: int | None) -> list[Health]:
    """The health of every node that receives studies, of one institution (None: of all)."""
    query = (
        select(nodes, institutions.c.ods_code)
        .join(institutions, institutions.c.id == nodes.c.institution_id)
        .where(nodes.c.destination.is_(True))
        .order_by(institutions.c.ods_code, nodes.c.name)
    )
    if institution_id is not None:
        query = query.where(nodes.c.institution_id == institution_id)
    found = []
    for node in conn.execute(query).all():
        mine = transfers.c.destination_node_id == node.id
        last_success = conn.execute(select(func.max(transfers.c.delivered_at)).where(mine)).scalar()
        counts = conn.execute(
            select(
                func.count().filter(transfers.c.state.in_(WAITING)),
                func.count().filter(transfers.c.state.in_(("pending", "sending")), transfers.c.attempts > 0),
                func.count().filter(transfers.c.state == "failed"),
                func.min(transfers.c.created_at).filter(transfers.c.state.in_(WAITING)),
            ).where(mine)
        ).one()
        error = conn.execute(
            select(transfers.c.last_error, transfers.c.updated_at)
            .where(mine, transfers.c.last_error.is_not(None), transfers.c.state.in_(("pending", "sending", "failed")))
            .order_by(transfers.c.updated_at.desc())
            .limit(1)
        ).first()
        found.append(
            Health(
                node_id=node.id,
                node=node.name,
                ae_title=node.ae_title,
                institution=node.ods_code,
                enabled=node.enabled,
                last_success=last_success,
                last_error=error.last_error if error else "",
                last_error_at=error.updated_at if error else None,
                waiting=counts[0],
                retrying=counts[1],
                failed=counts[2],
                oldest_waiting=counts[3],
                failing_since=_failing_since(conn, node.id, last_success),
            )
        )
    return found


def alert_down(db: Database, after_minutes: float) -> int:
    """Alert once per outage for each destination failing for `after_minutes`: its node's and its
    institution's contacts by e-mail, the institution's transfer managers in the portal. Returns how many."""
    if after_minutes <= 0:
        return 0
    now = utcnow()
    with db.reader() as conn:  # looking takes no write lock; only an alert does
        found = destinations(conn, None)
        conn.rollback()
    alerted = 0
    for health in found:
        if health.failing_since is None or not health.enabled:
            continue
        if now - health.failing_since < dt.timedelta(minutes=after_minutes):
            continue
        with db.engine.begin() as conn:
            node = conn.execute(select(nodes).where(nodes.c.id == health.node_id)).one()
            if node.down_alerted_at is not None and node.down_alerted_at >= health.failing_since:
                continue  # this outage was reported already (by this process or another)
            _alert(conn, node, health, now)
            conn.execute(update(nodes).where(nodes.c.id == node.id).values(down_alerted_at=now))
        alerted += 1
    return alerted


def _alert(conn: Connection, node, health: Health, now: dt.datetime) -> None:
    minutes = (now - health.failing_since).total_seconds() / 60 if health.failing_since else 0
    title = f"Destination {health.node} ({health.ae_title}) has been failing for {minutes:.0f} min"
    body = (
        f"{title}.\n\n{health.waiting} transfer(s) wait for it, {health.retrying} after a failed attempt, "
        f"{health.failed} failed for good.\nLast error: {health.last_error or 'none recorded'}.\n"
        f"Last successful delivery: {health.last_success or 'never'}.\n\n"
        "The hub keeps retrying by itself; once the node is fixed, use Retry now on the Destinations page "
        "of the imex portal to send at once.\n"
    )
    institution = conn.execute(select(institutions).where(institutions.c.id == node.institution_id)).one()
    managers = users_with_permission(conn, node.institution_id, "transfers.manage")
    notify_users(conn, managers, DOWN, title[:200], "/destinations")
    recipients = [a for a in dict.fromkeys([node.contact_email or "", institution.contact_email or ""]) if a]
    if recipients:
        queue_email(conn, recipients, f"imex: {title}", body)
    log.warning("%s; alerted %s", title, ", ".join(recipients) or "the portal only")


def stalled_transfers(conn: Connection, node_id: int) -> list[int]:
    """Transfers to the node that failed for good or wait after a failed attempt: what "Retry now" sends."""
    return list(
        conn.execute(
            select(transfers.c.id)
            .where(
                transfers.c.destination_node_id == node_id,
                or_(
                    transfers.c.state == "failed",
                    and_(transfers.c.state == "pending", transfers.c.attempts > 0),
                ),
            )
            .order_by(transfers.c.priority.desc(), transfers.c.id)
        ).scalars()
    )
