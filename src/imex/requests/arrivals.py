"""The requests' answer to the router's `study.stable` hook, asked after the exchanges': a stable study
that is what an open image request asked of the institution that sent it becomes a transaction to the
requester, and is routed with it."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Connection

from imex import events
from imex.exchanges.arrivals import route_to_transactions, source_institutions
from imex.requests.lifecycle import match_arrival


@events.on("study.stable", order=20)
def fulfil_request(conn: Connection, study_id: int, study: Any) -> Literal["transaction"] | None:
    """ "transaction" when the study fulfils a request and was queued to the requester, else None."""
    tid = match_arrival(conn, study, source_institutions(conn, study))
    if tid is not None and route_to_transactions(conn, study, [int(tid)]):
        return "transaction"
    return None
