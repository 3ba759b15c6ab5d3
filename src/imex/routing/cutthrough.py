"""Cut-through for emergency transfers: while a study is still arriving, the worker sending it adds each
instance that reached the hub meanwhile to the transfer and sends it on, so the last image leaves within
moments of arriving instead of after the stability wait and a new claim."""

from __future__ import annotations

from sqlalchemy import Connection, func, insert, select, update

from imex.db import utcnow
from imex.db.models import instances, items, transfers


def top_up(conn: Connection, transfer_id: int) -> int:
    """Give the transfer an item for every instance of its study it lacks; returns how many were added."""
    study_id = conn.execute(select(transfers.c.study_id).where(transfers.c.id == transfer_id)).scalar_one()
    missing = (
        conn.execute(
            select(instances.c.id)
            .where(instances.c.study_id == study_id)
            .where(~instances.c.id.in_(select(items.c.instance_id).where(items.c.transfer_id == transfer_id)))
        )
        .scalars()
        .all()
    )
    if not missing:
        return 0
    conn.execute(insert(items), [dict(transfer_id=transfer_id, instance_id=i, state="pending") for i in missing])
    total = conn.execute(select(func.count()).select_from(items).where(items.c.transfer_id == transfer_id)).scalar_one()
    conn.execute(
        update(transfers).where(transfers.c.id == transfer_id).values(instances_total=total, updated_at=utcnow())
    )
    return len(missing)
