"""Reads of the locator that the JSON API (web/api/locator.py) and the pages (web/pages/locator.py) both
use: a locator entry the caller may see, and the sweeps of their institution's PACS."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Institution, LocatorEntry, LocatorSweep, Node
from imex.web.deps import visible_or_deny


def visible_entry(s: Session, p: Principal, entry_id: int) -> tuple[LocatorEntry, Institution]:
    """The entry and the institution holding the study, when `p` may find it; otherwise 404, audited."""
    p.require("locator.search")
    return visible_or_deny(
        s, p, s.execute(scope.locator_query(p).where(LocatorEntry.id == entry_id)).first(), "locator entry", entry_id
    )


def sweep_view(sweep: LocatorSweep, node: Node) -> dict[str, Any]:
    return {
        "node": node.name,
        "enabled": sweep.enabled,
        "interval_minutes": sweep.interval_minutes,
        "lookback_days": sweep.lookback_days,
        "queries_per_minute": sweep.queries_per_minute,
        "swept_to": sweep.swept_to,
        "next_run_at": sweep.next_run_at.isoformat() + "Z",
        "attempts": sweep.attempts,
        "last_error": sweep.last_error,
        "last_ok_at": sweep.last_ok_at.isoformat() + "Z" if sweep.last_ok_at else None,
        "studies_seen": sweep.studies_seen,
    }


def sweeps(s: Session, p: Principal) -> list[dict[str, Any]]:
    """Sweeps of `p`'s institution's PACS and how far they got."""
    p.require("nodes.manage")
    rows = s.execute(
        select(LocatorSweep, Node)
        .join(Node, Node.id == LocatorSweep.node_id)
        .where(scope.own_institution_clause(p, Node.institution_id))
        .order_by(Node.name)
    ).all()
    return [sweep_view(sw, node) for sw, node in rows]
