"""The exchanges' answer to the router's `study.stable` hook, asked before the static rules: a study that
belongs to a transaction is queued to the transaction's destination (with its priority and recipient); a
study fetched only for viewing is kept as "cached" and never routed; a study still being retrieved waits.
(A study that fulfils an image request is turned into a transaction by the requests flow, which answers
the same hook after this one.)"""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy import Connection, exists, select, update

from imex import events
from imex.db.models import instances, nodes, retrievals, transaction_studies, transactions
from imex.exchanges.transactions import queue_transaction_study

log = logging.getLogger("imex.exchanges.arrivals")
Outcome = Literal["transaction", "cached", "wait"] | None


def source_institutions(conn: Connection, study) -> set[int]:
    """The institutions whose nodes sent the study's instances (and the study's own)."""
    found = set(
        conn.execute(
            select(nodes.c.institution_id)
            .distinct()
            .join(instances, instances.c.source_node_id == nodes.c.id)
            .where(instances.c.study_id == study.id)
        ).scalars()
    )
    return found | {study.institution_id}


def route_to_transactions(conn: Connection, study, transaction_ids: list[int] | None = None) -> bool:
    """Link the study to the transactions from its institution that carry its UID and queue its transfers."""
    query = (
        select(transactions)
        .join(transaction_studies, transaction_studies.c.transaction_id == transactions.c.id)
        .where(
            transaction_studies.c.study_uid == study.study_uid,
            transactions.c.source_institution_id == study.institution_id,
        )
    )
    if transaction_ids is not None:
        query = query.where(transactions.c.id.in_(transaction_ids))
    found = conn.execute(query.order_by(transactions.c.id)).all()
    for tx in found:
        conn.execute(
            update(transaction_studies)
            .where(transaction_studies.c.transaction_id == tx.id, transaction_studies.c.study_uid == study.study_uid)
            .values(study_id=study.id)
        )
        queue_transaction_study(conn, tx, study.id)
        log.info("study %s routed with exchange %s", study.study_uid, tx.id)
    return bool(found)


@events.on("study.stable", order=10)
def route_hook(conn: Connection, study_id: int, study) -> Outcome:
    """What the exchange workflows say about a stable study: "wait" (a C-MOVE of it is still under way:
    a pause in arrivals is not its end), "transaction" (its transfers are queued), "cached" (fetched for
    viewing: do not route), or None (route it by the usual means)."""
    moving = conn.execute(
        select(exists().where(retrievals.c.study_uid == study.study_uid, retrievals.c.state.in_(("pending", "moving"))))
    ).scalar()
    if moving:
        return "wait"
    if route_to_transactions(conn, study):
        return "transaction"
    viewing = conn.execute(
        select(exists().where(retrievals.c.study_uid == study.study_uid, retrievals.c.purpose == "view"))
    ).scalar()
    if viewing:
        return "cached"
    return None
