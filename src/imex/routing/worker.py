"""Delivery: a worker claims a transfer, opens one association to its destination and sends the
instances not yet confirmed, committing each confirmation as it comes, so a crash resends at most the
instance that was in flight. Failures are retried with exponential backoff up to a limit; then the
transfer stays `failed` until an operator retries it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import DateTime, bindparam, func, select, text, update

from imex import events, metrics
from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import instances, items, nodes, studies, transfers
from imex.dicom.scu import Outgoing, is_success, send_all
from imex.harmonise.prepare import Harmoniser
from imex.jobs import engine
from imex.retention.policy import RetentionPolicy
from imex.routing import cutthrough, queue, recipient
from imex.routing.priority import EMERGENCY
from imex.routing.queue import DELIVERY, Claim, record
from imex.routing.reconcile import hold
from imex.store import BlobStore
from imex.tls import files as tls_files

log = logging.getLogger("imex.delivery")


# Run after every confirmed instance: prepared once (see index.ingest for why text).
_ITEM_SENT = text(
    "UPDATE transfer_items SET state = 'sent', status = :status, sent_at = :now, error = NULL WHERE id = :id"
).bindparams(bindparam("now", type_=DateTime))
# (the lease is the heartbeat's to renew; this only counts progress while the worker still owns the transfer)
_TRANSFER_PROGRESS = text(
    "UPDATE transfers SET instances_sent = instances_sent + 1, bytes_sent = bytes_sent + :size, "
    "updated_at = :now WHERE id = :id AND state = 'sending' AND claimed_by = :worker"
).bindparams(bindparam("now", type_=DateTime))


@dataclass(frozen=True)
class Pending:
    item_id: int
    instance_id: int
    outgoing: Outgoing
    size: int


class DeliveryWorker:
    def __init__(
        self,
        config: Config,
        db: Database,
        store: BlobStore,
        name: str,
        wake: threading.Event | None = None,
        harmoniser: Harmoniser | None = None,
    ) -> None:
        self.config = config
        self.harmoniser = harmoniser or Harmoniser.from_config(config)
        self.retention = RetentionPolicy.from_config(config)
        self.db = db
        self.store = store
        self.name = name
        self.lease_seconds = float(config["delivery.lease_seconds"])
        self.policy = DELIVERY.retry_policy(config)
        self.wake = wake or threading.Event()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                claimed = queue.claim(
                    self.db, self.name, self.config["delivery.lease_seconds"], self.config["delivery.per_destination"]
                )
                if claimed is None:
                    # the router of this process sets `wake` when it queues work; others are found by polling
                    if self.wake.wait(self.config["delivery.poll_interval"]):
                        self.wake.clear()
                    continue
                self.deliver(claimed, stop)
            except Exception:
                log.exception("delivery worker %s hit an error; continuing", self.name)
                stop.wait(1.0)

    # -- one transfer -------------------------------------------------------------------------------

    def _pending(self, transfer_id: int, coerce=None) -> list[Pending]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    items.c.id,
                    instances.c.id.label("instance_id"),
                    instances.c.blob_key,
                    instances.c.sop_class_uid,
                    instances.c.transfer_syntax_uid,
                    instances.c.size,
                    instances.c.sop_uid,
                )
                .join(instances, instances.c.id == items.c.instance_id)
                .where(items.c.transfer_id == transfer_id, items.c.state == "pending")
                .order_by(instances.c.series_id, instances.c.number, instances.c.id)
            ).all()
        return [
            Pending(
                r.id,
                r.instance_id,
                Outgoing(self.store.path(r.blob_key), r.sop_class_uid, r.transfer_syntax_uid, r.sop_uid, coerce),
                r.size,
            )
            for r in rows
        ]

    def deliver(self, claimed: Claim, stop: threading.Event) -> None:
        # the heartbeat renews the lease even while one large instance takes minutes to send
        with engine.Heartbeat(self.db, DELIVERY, claimed.transfer_id, self.name, self.lease_seconds):
            try:
                self._deliver(claimed, stop)
            except Exception as exc:  # whatever it was, the transfer must not stay claimed and loop forever
                log.exception("transfer %s: unexpected error", claimed.transfer_id)
                self._finish(claimed, None, [f"internal error: {type(exc).__name__}: {exc}"], interrupted=False)

    def _deliver(self, claimed: Claim, stop: threading.Event) -> None:
        with self.db.engine.connect() as conn:
            node = conn.execute(select(nodes).where(nodes.c.id == claimed.destination_node_id)).one()
            conn.rollback()
        # header harmonisation for this destination: None keeps the byte-for-byte path
        prepared = self.harmoniser.for_transfer(self.db, self.store, claimed.transfer_id)
        if prepared.hold:
            hold(self.db, claimed.transfer_id, self.name, prepared.hold)
            return
        with self.db.reader() as conn:
            needs_recipient = recipient.missing_recipient(conn, claimed.transfer_id)
            level = (
                conn.execute(select(transfers.c.priority).where(transfers.c.id == claimed.transfer_id)).scalar_one()
                or 0
            )
            conn.rollback()
        if needs_recipient:
            recipient.hold(self.db, claimed.transfer_id, self.name)
            return
        coerce = prepared.coercion.apply if prepared.coercion is not None else None
        errors: list[str] = []
        interrupted = False
        # rounds: instances that arrived while a round was sent (late ones, or an emergency study still
        # arriving: cut-through) go in the next round, so the transfer ends only when nothing is left
        while not errors and not interrupted:
            if level >= EMERGENCY:
                with self.db.engine.begin() as conn:
                    cutthrough.top_up(conn, claimed.transfer_id)
            batch = self._pending(claimed.transfer_id, coerce)
            if not batch:
                break
            errors, interrupted = self._send_round(claimed, node, batch, stop)
        self._finish(claimed, node, errors, interrupted=interrupted)

    def _send_round(self, claimed: Claim, node, batch: list[Pending], stop: threading.Event) -> tuple[list[str], bool]:
        """Send a batch on one association; returns the errors and whether the transfer was interrupted."""
        errors: list[str] = []
        for p, sent in send_all(
            batch,
            lambda p: p.outgoing,
            calling_aet=self.config["dicom.ae_title"],
            called_aet=node.ae_title,
            host=node.host,
            port=node.port,
            timeout=self.config["dicom.dimse_timeout"],
            tls=tls_files.outbound(self.config, node.tls),
        ):
            if sent.association_lost:
                errors.append(sent.error)
                break  # the destination is gone: retry the rest later
            if sent.status is None:
                errors.append(self._item_failed(claimed, p, None, sent.error))
            elif not is_success(sent.status):
                detail = f"{p.outgoing.sop_instance_uid}: status 0x{sent.status:04X}" + (
                    f" ({sent.error})" if sent.error else ""
                )
                errors.append(self._item_failed(claimed, p, sent.status, f"destination refused {detail}"))
            elif not self._confirm(claimed, p, sent.status):
                return errors, True  # cancelled, or taken over after a lost lease
            if stop.is_set():
                return errors, True
        return errors, False

    def _confirm(self, claimed: Claim, p: Pending, status: int) -> bool:
        """Commit one confirmed instance; False when this worker no longer owns the transfer."""
        now = utcnow()
        with self.db.engine.begin() as conn:
            conn.execute(_ITEM_SENT, {"id": p.item_id, "status": status, "now": now})
            owned = conn.execute(
                _TRANSFER_PROGRESS, {"id": claimed.transfer_id, "worker": self.name, "size": p.size, "now": now}
            ).rowcount
        metrics.INSTANCES_SENT.inc()
        metrics.BYTES_SENT.inc(p.size)
        return bool(owned)

    def _item_failed(self, claimed: Claim, p: Pending, status: int | None, error: str) -> str:
        with self.db.engine.begin() as conn:
            conn.execute(update(items).where(items.c.id == p.item_id).values(status=status, error=error[:2000]))
        log.warning("transfer %s: %s", claimed.transfer_id, error)
        return error

    def _finish(self, claimed: Claim, node, errors: list[str], interrupted: bool) -> None:
        now = utcnow()
        tid = claimed.transfer_id
        with self.db.engine.begin() as conn:
            row = conn.execute(select(transfers).where(transfers.c.id == tid)).one()
            if row.state != "sending" or row.claimed_by != self.name:
                return  # cancelled by an operator, or taken over after a lost lease
            left = conn.execute(
                select(func.count()).select_from(items).where(items.c.transfer_id == row.id, items.c.state == "pending")
            ).scalar_one()
            if left == 0:
                engine.finish(conn, DELIVERY, tid, self.name, "delivered", delivered_at=now, last_error=None)
                where = f" to {node.ae_title}@{node.host}:{node.port}" if node is not None else ""
                record(conn, row.id, "delivered", f"{row.instances_sent} instances, {row.bytes_sent} bytes{where}")
                study = conn.execute(select(studies.c.last_received_at).where(studies.c.id == row.study_id)).one()
                metrics.DELIVERY_LATENCY.observe(max((now - study.last_received_at).total_seconds(), 0.0))
                metrics.TRANSFERS_FINISHED.labels(state="delivered").inc()
                self.retention.stamp(conn, row.study_id, now)
                # a re-send after a confirmation round told everyone already: the alerts and the report
                # follow the first delivery only (the confirmation, if the node asks for one, follows each)
                events.emit("transfer.delivered", conn, transfer_id=row.id, announce=not row.confirm_rounds)
            elif interrupted and not errors:
                engine.release(conn, DELIVERY, tid, self.name)
                record(conn, row.id, "paused", f"{left} instances left; the hub is stopping")
            else:
                error = "; ".join(dict.fromkeys(errors))[:2000] or "unknown error"
                outcome = engine.retry_later(conn, DELIVERY, tid, self.name, error, self.policy)
                if outcome is not None and outcome.dead:
                    record(conn, row.id, "failed", f"gave up after {outcome.attempts} attempts: {error}")
                    metrics.TRANSFERS_FINISHED.labels(state="failed").inc()
                    events.emit("transfer.failed", conn, transfer_id=row.id)
                elif outcome is not None:
                    record(
                        conn,
                        row.id,
                        "retry-scheduled",
                        f"attempt {outcome.attempts} failed: {error}; next in {outcome.delay:.0f} s",
                    )
