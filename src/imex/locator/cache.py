"""The view-before-import cache: a study C-MOVEd into the hub only to be looked at is kept "cached" (never
routed) for locator.view_retention_hours, then deleted by this job; the institution's PACS keeps its copy.
The general retention pass leaves cached studies alone, so this is the one place they expire."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import and_, exists, not_, select, update

from imex.db import Database, utcnow
from imex.db.models import retrievals, studies, transfers
from imex.index.remove import delete_study
from imex.store import BlobStore

log = logging.getLogger("imex.locator.cache")
ACTOR = {"username": "locator-cache"}
BUSY = ("pending", "sending", "held", "failed")


def _viewed():
    return exists(
        select(retrievals.c.id).where(retrievals.c.study_uid == studies.c.study_uid, retrievals.c.purpose == "view")
    )


def deletable(now: dt.datetime):
    """Cached studies whose time is up and that no transfer needs (sourcing one makes it a transfer)."""
    busy = exists(select(transfers.c.id).where(transfers.c.study_id == studies.c.id, transfers.c.state.in_(BUSY)))
    return and_(
        studies.c.route_state == "cached", studies.c.expires_at.is_not(None), studies.c.expires_at <= now, not_(busy)
    )


def run_once(
    db: Database, store: BlobStore | None, hours: float, *, now: dt.datetime | None = None, batch: int = 50
) -> int:
    """Give cached studies their short expiry, then delete those whose expiry passed; returns how many."""
    now = now or utcnow()
    keep = dt.timedelta(hours=hours)
    with db.reader() as conn:
        cached = conn.execute(
            select(studies.c.id, studies.c.last_received_at, studies.c.expires_at).where(
                studies.c.route_state == "cached", _viewed()
            )
        ).all()
        conn.rollback()
    # the cache's own limit, counted from the last instance received (never later than it already is)
    stamps = {
        row.id: row.last_received_at + keep
        for row in cached
        if row.expires_at is None or row.expires_at > row.last_received_at + keep
    }
    if stamps:
        with db.engine.begin() as conn:
            for study_id, expires in stamps.items():
                conn.execute(
                    update(studies)
                    .where(studies.c.id == study_id, studies.c.route_state == "cached")
                    .values(expires_at=expires)
                )
    with db.reader() as conn:
        due = (
            conn.execute(select(studies.c.id).where(deletable(now)).order_by(studies.c.expires_at).limit(batch))
            .scalars()
            .all()
        )
        conn.rollback()
    deleted = 0
    for study_id in due:
        gone = delete_study(
            db,
            store,
            study_id,
            only_if=deletable(now),
            actor=ACTOR,
            reason=f"view cache: kept {hours:g} h after it was fetched for viewing",
        )
        if gone is not None:
            deleted += 1
            with db.engine.begin() as conn:  # the view is over: it no longer makes the study visible
                conn.execute(
                    update(retrievals)
                    .where(
                        retrievals.c.study_uid == gone.study_uid,
                        retrievals.c.purpose == "view",
                        retrievals.c.state == "done",
                    )
                    .values(state="cancelled", last_error="view cache expired", updated_at=utcnow())
                )
            log.info("view cache deleted study %s (%d instances)", gone.study_uid, gone.instances)
    return deleted
