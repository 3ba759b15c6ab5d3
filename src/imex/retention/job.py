"""The retention pass: delete studies whose expiry has passed, a batch at a time, oldest expiry first.

A study is never deleted while anything may still need it: while it is receiving, while a transfer of it
is pending, sending, held for reconciliation or failed (someone has to act on it first). The check is
made again in the deleting transaction, so a transfer queued meanwhile wins. Readers that opened a blob
before the deletion keep reading it (the file is unlinked, not overwritten)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import and_, exists, not_, select

from imex import events
from imex.db import Database, utcnow
from imex.db.models import folder_studies, studies, transfers
from imex.index.remove import Deleted, delete_study
from imex.store import BlobStore

log = logging.getLogger("imex.retention")

SETTLED = ("routed", "quarantined")
BUSY = ("pending", "sending", "held", "failed")
ACTOR = {"username": "retention"}


def deletable(now: dt.datetime):
    """Studies that have expired and that nothing needs any more."""
    busy = exists(select(transfers.c.id).where(transfers.c.study_id == studies.c.id, transfers.c.state.in_(BUSY)))
    shared = exists(
        select(folder_studies.c.id).where(folder_studies.c.study_id == studies.c.id, folder_studies.c.expires_at > now)
    )
    return and_(
        studies.c.expires_at.is_not(None),
        studies.c.expires_at <= now,
        studies.c.route_state.in_(SETTLED),
        not_(busy),
        not_(shared),
    )


@dataclass
class Pass:
    """What one pass did (or, dry, would do)."""

    deleted: list[Deleted] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    left_folders: int = 0  # studies taken out of folders


def run_once(
    db: Database, store: BlobStore | None, *, batch: int = 50, now: dt.datetime | None = None, dry_run: bool = False
) -> Pass:
    now = now or utcnow()
    result = Pass()
    if not dry_run:
        with db.engine.begin() as conn:  # folders keep studies for their own times
            result.left_folders = sum(events.emit("retention.pass", conn, now=now))
    with db.reader() as conn:
        due = conn.execute(
            select(studies.c.id, studies.c.study_uid, studies.c.expires_at)
            .where(deletable(now))
            .order_by(studies.c.expires_at)
            .limit(batch)
        ).all()
        conn.rollback()
    for row in due:
        result.candidates.append(row.study_uid)
        if dry_run:
            continue
        deleted = delete_study(
            db,
            store,
            row.id,
            only_if=deletable(now),
            actor=ACTOR,
            reason=f"retention: expired {row.expires_at:%Y-%m-%d %H:%M} UTC",
        )
        if deleted is not None:
            result.deleted.append(deleted)
            log.info(
                "retention deleted study %s (%d instances, %d bytes)",
                deleted.study_uid,
                deleted.instances,
                deleted.bytes,
            )
    return result
