"""The request job, run by every `imex serve` process: requests whose images were delivered become
fulfilled, and requests left open or accepted past `requests.expiry_days` expire. Each pass is one
transaction and its UPDATEs re-check the state, so processes sharing a database never act twice."""

from __future__ import annotations

from imex.db import Database
from imex.requests import lifecycle as requests


def run_once(db: Database) -> tuple[list[int], list[int]]:
    """(fulfilled, expired) request ids of this pass."""
    with db.engine.begin() as conn:
        fulfilled = requests.mark_fulfilled(conn)
    with db.engine.begin() as conn:
        expired = requests.expire_due(conn)
    return fulfilled, expired
