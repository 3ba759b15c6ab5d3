"""Confirmed delivery: after a transfer is `delivered` to a node whose `confirm` is `commitment` or `count`,
ask the node whether it holds every instance, and apply the answer.

Every instance held: the transfer becomes `confirmed`. Some not held (reported failed, or missing): their
items go back to `pending` and the transfer back to the queue, up to `confirm.max_rounds` times; then it is
`failed` with the instances named. Requests live in `commitment_requests` so that nothing depends on one
process: a request being asked by a process that dies is taken over when its lease expires, a report on a
new association is applied by whichever process's listener receives it, and a destination that never
answers is asked again after `confirm.timeout_seconds`, at most `confirm.max_asks` times.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import Connection, func, insert, select, update

from imex import audit, events, metrics
from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import commitment_requests, instances, items, nodes, series, studies, transfers
from imex.dicom import commitment
from imex.dicom.commitment import Report
from imex.harmonise.prepare import Harmoniser
from imex.harmonise.uids import new_uid
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetrySettings
from imex.jobs.registry import register
from imex.routing.queue import record
from imex.store import BlobStore
from imex.tls import files as tls_files

log = logging.getLogger("imex.confirm")

requests = commitment_requests
OPEN = ("due", "asking", "waiting")

# Asking is the job: `due` until a process claims it (`asking`, with a lease), then `waiting` for a report
# that may come on a new association, and `expired` once `confirm.max_asks` asks went unanswered.
CONFIRM = register(
    JobQueue(
        "confirm",
        requests,
        RetrySettings(
            "delivery.retry_initial_seconds",
            "delivery.retry_multiplier",
            "delivery.retry_max_seconds",
            "confirm.max_asks",
        ),
        due_state="due",
        running_state="asking",
        dead_state="expired",
        due_column="due_at",
        attempts_column="asks",
        error_column="detail",
        description="Confirmations of delivery asked of destinations (Storage Commitment, C-FIND).",
    )
)
# The requests whose destination was asked and has not answered in time (not a queue of its own: the
# timeouts of CONFIRM's `waiting` requests, claimed so that one process times each out).
SILENT = JobQueue(
    "confirm-timeouts",
    requests,
    None,
    due_state="waiting",
    due_column="due_at",
    attempts_column=None,
    error_column="detail",
    dead_state=None,
)


@events.on("transfer.delivered")
def after_delivery(conn: Connection, transfer_id: int, announce: bool = True) -> bool:
    """In the transaction that marks the transfer delivered (every delivery, re-sends too): queue a
    confirmation when its destination asks for one. True when one was queued."""
    method = conn.execute(
        select(nodes.c.confirm)
        .join(transfers, transfers.c.destination_node_id == nodes.c.id)
        .where(transfers.c.id == transfer_id)
    ).scalar()
    if method not in ("commitment", "count"):
        return False
    now = utcnow()
    for open_id in (
        conn.execute(select(requests.c.id).where(requests.c.transfer_id == transfer_id, requests.c.state.in_(OPEN)))
        .scalars()
        .all()
    ):
        engine.finish(conn, CONFIRM, open_id, None, "superseded", detail="delivered again")
    count = conn.execute(
        select(func.count()).select_from(items).where(items.c.transfer_id == transfer_id, items.c.state == "sent")
    ).scalar_one()
    conn.execute(
        insert(requests).values(
            transfer_id=transfer_id,
            method=method,
            transaction_uid=generate_uid(),
            state="due",
            due_at=now,
            asks=0,
            instances=count,
            created_at=now,
            detail="",
        )
    )
    record(
        conn,
        transfer_id,
        "confirm-queued",
        f"asking the destination to confirm {count} instances by "
        + ("Storage Commitment" if method == "commitment" else "C-FIND"),
    )
    return True


# -- applying an answer -------------------------------------------------------------------------------


def _sent(conn: Connection, transfer_id: int) -> dict[str, int]:
    """SOP Instance UID -> item id of every instance the transfer has sent."""
    return {
        r.sop_uid: r.id
        for r in conn.execute(
            select(items.c.id, instances.c.sop_uid)
            .join(instances, instances.c.id == items.c.instance_id)
            .where(items.c.transfer_id == transfer_id, items.c.state == "sent")
        )
    }


def _same(uid: str) -> str:
    return uid


def apply_answer(
    config: Config,
    conn: Connection,
    request_id: int,
    held: set[str],
    failed: dict[str, str],
    how: str,
    outgoing: Callable[[str], str] = _same,
) -> str:
    """Apply what the destination holds to the transfer of an open request (in the caller's transaction):
    confirmed, sent again, or failed. `held` and `failed` name instances as the destination knows them
    (`outgoing` of the hub's UIDs). Returns the transfer's new state."""
    req = conn.execute(select(requests).where(requests.c.id == request_id)).one()
    t = conn.execute(
        select(transfers, nodes.c.ae_title, nodes.c.name.label("node_name"))
        .join(nodes, nodes.c.id == transfers.c.destination_node_id)
        .where(transfers.c.id == req.transfer_id)
    ).one()
    study = conn.execute(select(studies.c.study_uid, studies.c.institution_id).where(studies.c.id == t.study_id)).one()
    now = utcnow()
    sent = _sent(conn, t.id)
    back = {outgoing(uid): uid for uid in sent}
    stranger = len((held | set(failed)) - set(back))
    held = {back[uid] for uid in held if uid in back}
    failed = {back[uid]: why for uid, why in failed.items() if uid in back}
    missing = {uid: failed.get(uid, "not held by the destination") for uid in sent if uid not in held}
    note = f"; {stranger} unknown instance(s) in the answer ignored" if stranger else ""
    engine.finish(
        conn,
        CONFIRM,
        req.id,
        None,
        "answered",
        answered_at=now,
        committed=len(sent) - len(missing),
        failed=len(missing),
        detail=f"{how}: {len(sent) - len(missing)} of {len(sent)} held{note}"[:2000],
    )
    if t.state != "delivered":
        record(conn, t.id, "confirm-ignored", f"{how} answered while the transfer is {t.state}{note}")
        return str(t.state)
    audit_fields = dict(
        study_uid=study.study_uid,
        institution_id=study.institution_id,
        object_type="transfer",
        object_id=t.id,
        username="hub",
    )
    if not missing:
        conn.execute(
            update(transfers)
            .where(transfers.c.id == t.id)
            .values(state="confirmed", confirmed_at=now, last_error=None, updated_at=now)
        )
        record(conn, t.id, "confirmed", f"{t.ae_title} holds all {len(sent)} instances ({how}){note}")
        metrics.TRANSFERS_FINISHED.labels(state="confirmed").inc()
        audit.record(conn, "transfer.confirmed", detail=f"{t.node_name}: {len(sent)} instances ({how})", **audit_fields)
        events.emit("transfer.confirmed", conn, transfer_id=t.id)
        return "confirmed"
    listed = ", ".join(f"{uid} ({why})" for uid, why in list(missing.items())[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    summary = f"{t.ae_title} did not confirm {len(missing)} of {len(sent)} instances ({how}): {listed}{more}"
    ids = [sent[uid] for uid in missing]
    if (t.confirm_rounds or 0) < config["confirm.max_rounds"]:
        conn.execute(
            update(items)
            .where(items.c.id.in_(ids))
            .values(state="pending", error=f"not confirmed by {t.ae_title}; sending again")
        )
        conn.execute(
            update(transfers)
            .where(transfers.c.id == t.id)
            .values(
                state="pending",
                next_attempt_at=now,
                attempts=0,
                delivered_at=None,
                updated_at=now,
                confirm_rounds=transfers.c.confirm_rounds + 1,
                instances_sent=func.max(transfers.c.instances_sent - len(ids), 0)
                if conn.dialect.name == "sqlite"
                else func.greatest(transfers.c.instances_sent - len(ids), 0),
                last_error=summary[:2000],
            )
        )
        record(
            conn,
            t.id,
            "confirm-resend",
            f"{summary}; sending them again (round {(t.confirm_rounds or 0) + 1} of {config['confirm.max_rounds']})",
        )
        audit.record(
            conn, "transfer.confirm", outcome="failure", detail=f"{summary}; sending again"[:4000], **audit_fields
        )
        return "pending"
    error = f"{summary}; still missing after {t.confirm_rounds or 0} re-send(s)"
    _fail(conn, t.id, error, ids)
    audit.record(conn, "transfer.confirm", outcome="failure", detail=error[:4000], **audit_fields)
    return "failed"


def _fail(conn: Connection, transfer_id: int, error: str, item_ids: list[int] | None = None) -> None:
    now = utcnow()
    if item_ids:
        conn.execute(update(items).where(items.c.id.in_(item_ids)).values(state="failed", error=error[:2000]))
    conn.execute(
        update(transfers)
        .where(transfers.c.id == transfer_id)
        .values(state="failed", last_error=error[:2000], updated_at=now)
    )
    record(conn, transfer_id, "failed", f"delivery not confirmed: {error}")
    events.emit("transfer.failed", conn, transfer_id=transfer_id)


UidMap = Callable[[int], Callable[[str], str]]


class Reports:
    """The N-EVENT-REPORT handler for both paths (the hub's listener and its own association)."""

    def __init__(self, config: Config, db: Database, uid_map: UidMap | None = None) -> None:
        self.config = config
        self.db = db
        self.uid_map = uid_map or (lambda transfer_id: _same)

    def __call__(self, report: Report, calling_aet: str | None) -> tuple[int, str]:
        with self.db.reader() as conn:  # the UIDs the destination knows, worked out before writing
            transfer_id = conn.execute(
                select(requests.c.transfer_id).where(requests.c.transaction_uid == report.transaction_uid)
            ).scalar()
            conn.rollback()
        outgoing = self.uid_map(transfer_id) if transfer_id is not None else _same
        with self.db.engine.begin() as conn:
            row = conn.execute(
                select(requests.c.id, requests.c.state, requests.c.method, requests.c.transfer_id, nodes.c.ae_title)
                .join(transfers, transfers.c.id == requests.c.transfer_id)
                .join(nodes, nodes.c.id == transfers.c.destination_node_id)
                .where(requests.c.transaction_uid == report.transaction_uid)
            ).first()
            if row is None or row.method != "commitment":
                log.warning(
                    "storage commitment report from %s for unknown transaction %s",
                    calling_aet or "destination",
                    report.transaction_uid[:64],
                )
                return commitment.STATUS_INVALID_ARGUMENT, "unknown Transaction UID"
            if calling_aet is not None and calling_aet.strip().upper() != row.ae_title.upper():
                log.warning(
                    "storage commitment report for transfer %s from %s, not its destination %s",
                    row.transfer_id,
                    calling_aet,
                    row.ae_title,
                )
                record(
                    conn,
                    row.transfer_id,
                    "confirm-refused",
                    f"a report for this transfer came from {calling_aet[:16]}, not {row.ae_title}; ignored",
                )
                return commitment.STATUS_NOT_AUTHORIZED, "not the destination of this transaction"
            if row.state not in ("asking", "waiting"):
                return commitment.STATUS_INVALID_ARGUMENT, f"transaction is {row.state}, not awaiting a report"
            failed = {uid: f"failure reason 0x{reason:04X}" for uid, reason in report.failed.items()}
            how = "storage commitment" + (" on a new association" if calling_aet is not None else "")
            state = apply_answer(self.config, conn, row.id, set(report.committed), failed, how, outgoing)
        log.info("transfer %s: storage commitment report applied: %s", row.transfer_id, state)
        return commitment.STATUS_SUCCESS, ""


# -- asking -------------------------------------------------------------------------------------------


class Confirmer:
    """The job that asks: one pass claims due requests and times out silent destinations."""

    def __init__(
        self,
        config: Config,
        db: Database,
        name: str,
        harmoniser: Harmoniser | None = None,
        store: BlobStore | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.name = name
        self.harmoniser = harmoniser
        self.store = store
        self.reports = Reports(config, db, self.uid_map)
        self._asking: list[threading.Thread] = []
        self.lease_seconds = float(config["delivery.lease_seconds"])
        self.policy = CONFIRM.retry_policy(config)

    def uid_map(self, transfer_id: int) -> Callable[[str], str]:
        """How the destination knows an instance, series or study: header harmonisation with
        `uids = "new"`, or de-identification, sent it new UIDs derived from the hub's (the same on every
        send), so the request and the answer must speak of those."""
        if self.harmoniser is None or self.store is None:
            return _same
        coercion = self.harmoniser.for_transfer(self.db, self.store, transfer_id).coercion
        if coercion is None:
            return _same
        if coercion.deidentifies:
            scope = f"deidentify:{coercion.context.destination_ods}"
        elif any(r.uids == "new" for r in coercion.rules):
            scope = f"destination:{coercion.context.destination_ods}"
        else:
            return _same
        key = coercion.context.key
        return lambda uid: new_uid(key, scope, uid)

    def run_once(self) -> int:
        """Time out, take back and start asking; returns how many requests were started. Each request is
        asked on its own thread (at most `delivery.workers` at once), so a destination that keeps the
        association open without answering delays no other."""
        self._expire()
        self._asking = [thread for thread in self._asking if thread.is_alive()]
        started = 0
        while len(self._asking) < max(int(self.config["delivery.workers"]), 1):
            claimed = self._claim()
            if claimed is None:
                break
            thread = threading.Thread(
                target=self._ask_logged, args=(claimed,), daemon=True, name=f"confirm-ask-{claimed.id}"
            )
            thread.start()
            self._asking.append(thread)
            started += 1
        return started

    def _ask_logged(self, claimed) -> None:
        try:
            self._ask(claimed)
        except Exception:  # the claim lapses and another pass asks again
            log.exception("confirmation %s of transfer %s failed", claimed.id, claimed.transfer_id)

    def _expire(self) -> None:
        """Take back the asks of processes that died, and time out destinations that never answered."""
        engine.reap(
            self.db,
            CONFIRM,
            values=lambda: dict(transaction_uid=generate_uid()),
            on_reaped=lambda conn, r: record(
                conn,
                r.transfer_id,
                "confirm-resumed",
                f"{r.claimed_by} stopped while asking the destination; asking again",
            ),
        )
        # several processes: each silent request is timed out by one of them
        for r in engine.claim(self.db, SILENT, self.name, self.lease_seconds, limit=50):
            with self.db.engine.begin() as conn:
                self._unanswered(
                    conn,
                    r,
                    f"no Storage Commitment report within {self.config['confirm.timeout_seconds']:.0f} s",
                    owner=None,
                )

    def _unanswered(self, conn: Connection, r, why: str, owner: str | None) -> None:
        """The destination did not answer this time: ask again (a new Transaction UID), or give up."""
        dest = conn.execute(
            select(nodes.c.ae_title, nodes.c.host, nodes.c.port)
            .join(transfers, transfers.c.destination_node_id == nodes.c.id)
            .where(transfers.c.id == r.transfer_id)
        ).one()
        where = f"{dest.ae_title}@{dest.host}:{dest.port}"
        # asked again under a new Transaction UID; a request given up keeps its own for late reports
        fresh: dict[str, Any] = {} if self.policy.exhausted(r.asks) else dict(transaction_uid=generate_uid())
        outcome = engine.retry_later(conn, CONFIRM, r.id, owner, why, self.policy, **fresh)
        if outcome is None:
            return
        if outcome.dead:
            state = conn.execute(select(transfers.c.state).where(transfers.c.id == r.transfer_id)).scalar()
            if state == "delivered":
                _fail(conn, r.transfer_id, f"{where} did not confirm delivery after {r.asks} request(s): {why}")
            return
        record(conn, r.transfer_id, "confirm-retry", f"{where}: {why}; asking again in {outcome.delay:.0f} s")

    def _claim(self):
        def still_delivered(conn: Connection, r) -> bool:
            state = conn.execute(select(transfers.c.state).where(transfers.c.id == r.transfer_id)).scalar()
            if state == "delivered":
                return True
            # reopened, cancelled or retried meanwhile: nothing to confirm
            engine.finish(conn, CONFIRM, r.id, None, "superseded", detail=f"transfer is {state}")
            return False

        rows = engine.claim(
            self.db, CONFIRM, self.name, self.lease_seconds, admit=still_delivered, values=dict(requested_at=utcnow())
        )
        return rows[0] if rows else None

    def _ask(self, r) -> None:
        with self.db.reader() as conn:
            t = conn.execute(
                select(transfers.c.id, transfers.c.study_id, nodes.c.ae_title, nodes.c.host, nodes.c.port, nodes.c.tls)
                .join(nodes, nodes.c.id == transfers.c.destination_node_id)
                .where(transfers.c.id == r.transfer_id)
            ).one()
            sent = conn.execute(
                select(instances.c.sop_class_uid, instances.c.sop_uid, series.c.series_uid)
                .join(items, items.c.instance_id == instances.c.id)
                .join(series, series.c.id == instances.c.series_id)
                .where(items.c.transfer_id == r.transfer_id, items.c.state == "sent")
                .order_by(instances.c.id)
            ).all()
            study_uid = conn.execute(select(studies.c.study_uid).where(studies.c.id == t.study_id)).scalar_one()
            conn.rollback()
        outgoing = self.uid_map(r.transfer_id)
        with self.db.engine.begin() as conn:
            record(
                conn,
                r.transfer_id,
                "confirm-asked",
                f"{'N-ACTION Storage Commitment' if r.method == 'commitment' else 'C-FIND'} to {t.ae_title} "
                f"for {len(sent)} instances (ask {r.asks}"
                + (f", transaction {r.transaction_uid})" if r.method == "commitment" else ")"),
            )
        tls = tls_files.outbound(self.config, bool(t.tls))
        with engine.Heartbeat(self.db, CONFIRM, r.id, self.name, self.lease_seconds):
            try:
                if r.method == "count":
                    self._count(r, t, study_uid, sent, tls, outgoing)
                else:
                    self._commitment(r, t, sent, tls, outgoing)
            except ConnectionError as exc:
                log.warning("transfer %s: confirmation failed: %s", r.transfer_id, exc)
                with self.db.engine.begin() as conn:
                    current = conn.execute(select(requests).where(requests.c.id == r.id)).one()
                    if current.state == "asking" and current.claimed_by == self.name:
                        self._unanswered(conn, current, str(exc), owner=self.name)

    def _count(self, r, t, study_uid: str, sent, tls, outgoing) -> None:
        from imex.dicom.held import held_instances

        by_series: dict[str, set[str]] = {}
        for row in sent:
            by_series.setdefault(outgoing(row.series_uid), set()).add(outgoing(row.sop_uid))
        held, level = held_instances(
            self.config["dicom.ae_title"],
            t.ae_title,
            t.host,
            t.port,
            outgoing(study_uid),
            by_series,
            timeout=self.config["dicom.dimse_timeout"],
            tls=tls,
        )
        with self.db.engine.begin() as conn:
            current = conn.execute(select(requests.c.state, requests.c.claimed_by).where(requests.c.id == r.id)).one()
            if current.state != "asking" or current.claimed_by != self.name:
                return  # superseded or taken over meanwhile
            apply_answer(self.config, conn, r.id, held, {}, f"C-FIND at {level} level", outgoing)

    def _commitment(self, r, t, sent, tls, outgoing) -> None:
        def answered() -> bool:
            with self.db.reader() as conn:
                state = conn.execute(select(requests.c.state).where(requests.c.id == r.id)).scalar()
                conn.rollback()
            return state not in ("asking", "waiting")

        done = commitment.request(
            self.config["dicom.ae_title"],
            t.ae_title,
            t.host,
            t.port,
            r.transaction_uid,
            [(row.sop_class_uid, outgoing(row.sop_uid)) for row in sent],
            on_report=self.reports,
            wait=self.config["confirm.wait_seconds"],
            answered=answered,
            timeout=self.config["dicom.dimse_timeout"],
            tls=tls,
        )
        if done:
            return
        now = utcnow()
        with self.db.engine.begin() as conn:
            moved = engine.finish(
                conn,
                CONFIRM,
                r.id,
                self.name,
                "waiting",
                due_at=now + dt.timedelta(seconds=self.config["confirm.timeout_seconds"]),
            )
            if moved:
                record(
                    conn,
                    r.transfer_id,
                    "confirm-waiting",
                    f"{t.ae_title} accepted the request; its report may come on a new association until "
                    f"{now + dt.timedelta(seconds=self.config['confirm.timeout_seconds']):%H:%M:%S} UTC",
                )
