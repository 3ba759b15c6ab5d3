"""Destination health that the JSON API (web/api/destinations.py) and the Destinations page both show,
and "Retry now" for a whole destination once its node is fixed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db import Database
from imex.db.models import Node
from imex.routing import health, queue
from imex.web.deps import visible_or_deny
from imex.web.views import iso


def _row(h: health.Health) -> dict[str, Any]:
    return {
        "node_id": h.node_id,
        "node": h.node,
        "ae_title": h.ae_title,
        "institution": h.institution,
        "status": h.status,
        "last_success": iso(h.last_success),
        "last_error": h.last_error,
        "last_error_at": iso(h.last_error_at),
        "waiting": h.waiting,
        "retrying": h.retrying,
        "failed": h.failed,
        "oldest_waiting": iso(h.oldest_waiting),
        "failing_since": iso(h.failing_since),
    }


def destinations(s: Session, p: Principal) -> dict[str, Any]:
    """Every destination node of `p`'s institution (all for system admins), failing ones first."""
    p.require("transfers.view")
    found = health.destinations(s.connection(), None if p.is_system_admin else p.institution_id)
    order = {"failing": 0, "ok": 1, "idle": 2, "disabled": 3}
    return {"destinations": [_row(h) for h in sorted(found, key=lambda h: (order[h.status], h.institution, h.node))]}


def retry_destination(s: Session, db: Database, p: Principal, node_id: int) -> dict[str, Any]:
    """Send now every transfer to the node that failed or waits after a failure (one of `p`'s nodes)."""
    p.require("transfers.manage")
    node = visible_or_deny(
        s, p, s.scalar(scope.nodes_query(p).with_only_columns(Node).where(Node.id == node_id)), "node", node_id
    )
    ids = health.stalled_transfers(s.connection(), node_id)
    s.commit()  # each retry is its own transaction (on SQLite, s must not hold the lock meanwhile)
    retried = []
    for transfer_id in ids:
        try:
            queue.retry(db, transfer_id)
        except queue.QueueError:
            continue  # finished or cancelled meanwhile
        retried.append(transfer_id)
    audit.record(
        s,
        "destination.retry",
        object_type="node",
        object_id=node.name,
        detail=f"retry now: {len(retried)} transfer(s) to {node.name}",
        **p.audit_fields(),
    )
    s.commit()
    return {"node": node.name, "retried": retried}


__all__ = ["destinations", "retry_destination"]
