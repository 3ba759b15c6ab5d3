"""Durable retrievals: C-MOVEs the hub asks of an institution's PACS, one row each, so that a crash or
`kill -9` loses none. A worker claims a due row with a lease it keeps renewing while the move runs; a
row whose lease lapsed (its process died) goes back to pending and is asked again (a repeated C-MOVE is
harmless: the hub stores what it already has as a duplicate). Failures retry with backoff and keep the
node's own words in `last_error`."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, insert, select, update

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import nodes, retrievals
from imex.dicom.query import NodeAddress
from imex.dicom.retrieve import MoveFailed, move_study
from imex.errors import Invalid
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetrySettings
from imex.jobs.registry import register

log = logging.getLogger("imex.exchanges.retrievals")
PURPOSES = ("transfer", "view")
ACTIVE = ("pending", "moving")


class RetrievalError(Invalid, ValueError):
    """A retrieval that cannot be queued (unknown node, a node the hub may not query, bad purpose)."""


def enqueue(
    conn: Connection,
    *,
    node_id: int,
    study_uid: str,
    purpose: str = "transfer",
    transaction_id: int | None = None,
    request_id: int | None = None,
    institution_id: int | None = None,
    requested_by: str = "",
) -> int:
    """Queue a C-MOVE of `study_uid` from `node_id` to the hub; returns the retrieval's id."""
    if purpose not in PURPOSES:
        raise RetrievalError(f"purpose must be one of {', '.join(PURPOSES)}")
    uid = (study_uid or "").strip()
    if not uid or len(uid) > 64:
        raise RetrievalError("a study instance UID (at most 64 characters) is needed")
    node = conn.execute(select(nodes.c.query_retrieve, nodes.c.enabled).where(nodes.c.id == node_id)).first()
    if node is None:
        raise RetrievalError(f"no node {node_id}")
    if not node.query_retrieve:
        raise RetrievalError("the hub may not query and retrieve from this node (turn on query/retrieve)")
    now = utcnow()
    return int(
        conn.execute(
            insert(retrievals)
            .values(
                node_id=node_id,
                study_uid=uid,
                purpose=purpose,
                transaction_id=transaction_id,
                request_id=request_id,
                institution_id=institution_id,
                requested_by=requested_by[:200],
                state="pending",
                attempts=0,
                next_attempt_at=now,
                completed=0,
                failed=0,
                warning=0,
                created_at=now,
                updated_at=now,
            )
            .returning(retrievals.c.id)
        ).scalar_one()
    )


RETRIEVE = register(
    JobQueue(
        "retrieve",
        retrievals,
        RetrySettings(
            "exchange.retrieve_retry_seconds",
            "exchange.retrieve_retry_multiplier",
            "exchange.retrieve_retry_max_seconds",
            "exchange.retrieve_max_attempts",
        ),
        due_state="pending",
        running_state="moving",
        dead_state="failed",
        updated_column="updated_at",
        description="C-MOVEs the hub asks of institutions' PACS (exchanges, requests, viewing).",
    )
)


def claim(db: Database, worker: str, lease_seconds: float) -> int | None:
    """Take the oldest due pending retrieval; None when there is none."""
    rows = engine.claim(db, RETRIEVE, worker, lease_seconds)
    return int(rows[0].id) if rows else None


def reap_expired_leases(db: Database) -> int:
    """Retrievals whose worker died mid-move go back to pending, to be asked again at once."""
    return engine.reap(
        db, RETRIEVE, values=lambda: dict(last_error="the hub stopped during the retrieval; asking again")
    )


def retry(db: Database, retrieval_id: int) -> bool:
    """Ask a failed retrieval again now, attempts from zero; False when it was not failed."""
    return engine.requeue(db, RETRIEVE, retrieval_id)


class RetrievalWorker:
    """Claims due retrievals and runs each C-MOVE to the hub's AE title."""

    def __init__(self, config: Config, db: Database, worker_id: str) -> None:
        self.db = db
        self.worker_id = worker_id
        self.hub_aet = config["dicom.ae_title"]
        self.lease = float(config["exchange.retrieve_lease_seconds"])
        self.policy = RETRIEVE.retry_policy(config)
        self.timeout = float(config["exchange.retrieve_timeout_seconds"])

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        while not stop.is_set():
            try:
                rid = claim(self.db, self.worker_id, self.lease)
                if rid is not None:
                    self.process(rid, stop)
                    continue
            except Exception:
                log.exception("retrieval worker %s failed; continuing", self.worker_id)
            stop.wait(poll)

    def process(self, rid: int, stop: threading.Event | None = None) -> None:
        with self.db.reader() as conn:
            row = conn.execute(
                select(
                    retrievals.c.study_uid,
                    retrievals.c.attempts,
                    nodes.c.ae_title,
                    nodes.c.host,
                    nodes.c.port,
                    nodes.c.name,
                    nodes.c.enabled,
                )
                .join(nodes, nodes.c.id == retrievals.c.node_id)
                .where(retrievals.c.id == rid)
            ).one()
            conn.rollback()
        error = ""
        outcome = None
        with engine.Heartbeat(self.db, RETRIEVE, rid, self.worker_id, self.lease):
            try:
                if not row.enabled:
                    error = f"node {row.name} is disabled"
                else:
                    outcome = move_study(
                        self.hub_aet, NodeAddress(row.ae_title, row.host, row.port), row.study_uid, timeout=self.timeout
                    )
                    if not outcome.ok:
                        error = f"{row.name} moved the study only in part: {outcome.describe()}"
            except (MoveFailed, ValueError, OSError) as exc:
                error = str(exc)
                if "stopped answering" in error or "did not answer" in error:  # a PACS that refuses the hub
                    error += (
                        f" (the PACS probably does not know the hub: add the hub's AE title {self.hub_aet}, "
                        "its host and DICOM port to it as a peer allowed to query and retrieve)"
                    )
        self._finish(rid, error, outcome)

    def _finish(self, rid: int, error: str, outcome) -> None:
        now = utcnow()
        counts = (
            {} if outcome is None else dict(completed=outcome.completed, failed=outcome.failed, warning=outcome.warning)
        )
        with self.db.engine.begin() as conn:
            if not error:
                engine.finish(conn, RETRIEVE, rid, self.worker_id, "done", last_error=None, finished_at=now, **counts)
                log.info("retrieval %s done: %s", rid, outcome.describe() if outcome else "")
                return
            result = engine.retry_later(conn, RETRIEVE, rid, self.worker_id, error, self.policy, **counts)
            if result is None:
                return
            if result.dead:
                conn.execute(update(retrievals).where(retrievals.c.id == rid).values(finished_at=now))
                log.warning("retrieval %s failed for good: %s", rid, error)
                _tell_sender(conn, rid)
            else:
                log.warning(
                    "retrieval %s attempt %s failed (retry in %.0f s): %s", rid, result.attempts, result.delay, error
                )


def _tell_sender(conn: Connection, retrieval_id: int) -> None:
    """The sending side's people in the exchange hear that a study could not be fetched from their PACS."""
    from imex.db.models import transactions
    from imex.exchanges.messages import followers
    from imex.notify.email import queue_email
    from imex.notify.inbox import notify_users

    tid = conn.execute(select(retrievals.c.transaction_id).where(retrievals.c.id == retrieval_id)).scalar()
    if tid is None:
        return
    tx = conn.execute(select(transactions).where(transactions.c.id == tid)).one()
    people = followers(conn, tx, tx.source_institution_id)
    title = f"A study of exchange {tid} could not be retrieved from your PACS"
    link = f"/exchanges/{tid}"
    notify_users(conn, people, "exchange.failed", title, link)
    queue_email(
        conn,
        [p.email for p in people if p.email],
        f"[imex] {title}",
        f"{title}.\n\nSign in to the imex portal to see why ({link}).\n",
    )
