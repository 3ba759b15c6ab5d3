"""Sending an upload: the choice is checked and an exchange transaction opened (kind "upload") in one
database transaction, before a single instance is stored, so the router sends each study to the chosen
destination when it is stable instead of deciding by the static rules. The upload worker then stores the
instances through the same ingest path as DICOM pushes and STOW-RS (blob store, then index), marking each
file stored; a worker killed half way is replaced when its lease runs out and stores only the rest."""

from __future__ import annotations

import logging
import shutil
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select, update

from imex import audit
from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import Instance, Institution, Node, Study, UploadFile, upload_files, uploads
from imex.dicom.parse import InvalidInstance, read_instance
from imex.dicom.part10 import chunks_to_store, dataset_offset, read_meta
from imex.exchanges.transactions import TransactionError, open_transaction
from imex.index.ingest import Source
from imex.jobs import engine
from imex.jobs.queue import JobQueue
from imex.jobs.registry import register
from imex.upload.review import instances_and_skipped
from imex.upload.staging import Staging, UploadError

if TYPE_CHECKING:
    from imex.auth.permissions import Principal
    from imex.index.ingest import Ingest
    from imex.store.quota import Quota

log = logging.getLogger("imex.upload")
CALLING_AET = "UPLOAD"
_uploads = uploads

# A `sending` upload is stored by the worker that holds its lease; no lease (NULL) or a lapsed one: free.
UPLOAD = register(
    JobQueue(
        "upload",
        _uploads,
        None,
        due_state="sending",
        due_column="lease_until",
        null_is_due=True,
        attempts_column=None,
        error_column="error",
        description="Uploads from the browser, stored into the hub and sent on.",
    )
)


@dataclass(frozen=True)
class Choice:
    destination_institution_id: int
    destination_node_id: int | None
    priority: int
    recipient: str
    recipient_user_id: int | None
    message: str
    subject: str


def _check_choice(conn: Connection, p: Principal, choice: Choice) -> str:
    """The destination's ODS code, or UploadError."""
    ods = conn.execute(select(Institution.ods_code).where(Institution.id == choice.destination_institution_id)).scalar()
    if ods is None:
        raise UploadError(422, "choose a destination institution that exists")
    if choice.destination_institution_id == p.institution_id:
        raise UploadError(422, "the destination must be another institution than your own")
    if choice.destination_node_id is not None:
        node = conn.execute(
            select(Node.institution_id, Node.destination, Node.enabled).where(Node.id == choice.destination_node_id)
        ).first()
        if (
            node is None
            or node.institution_id != choice.destination_institution_id
            or not node.destination
            or not node.enabled
        ):
            raise UploadError(422, f"the node chosen is not an enabled destination of {ods}")
    return ods


def _foreign(conn: Connection, p: Principal, study_uids: set[str], sop_uids: set[str]) -> list[str]:
    """Study UIDs another institution sent to the hub: nobody else may add instances to them (as STOW-RS)."""
    if p.is_system_admin:
        return []
    found = set(
        conn.execute(
            select(Study.study_uid).where(Study.study_uid.in_(study_uids), Study.institution_id != p.institution_id)
        ).scalars()
    )
    found |= set(
        conn.execute(
            select(Study.study_uid)
            .join(Instance, Instance.study_id == Study.id)
            .where(Instance.sop_uid.in_(sop_uids), Study.institution_id != p.institution_id)
        ).scalars()
    )
    return sorted(found)


def send(
    db: Database, staging: Staging, p: Principal, upload_id: int, choice: Choice, quota: Quota | None = None
) -> int:
    """Open the transaction and hand the upload to the worker; returns the transaction's id."""
    with db.reader() as conn:
        state = conn.execute(select(_uploads.c.state).where(_uploads.c.id == upload_id)).scalar()
        conn.rollback()
    if state != "open":
        raise UploadError(409, f"this upload is {state}; only an open upload can be sent")
    arriving = staging.incomplete(upload_id)
    if arriving:
        raise UploadError(
            409,
            f"{len(arriving)} file(s) have not finished arriving (e.g. {arriving[0]}); "
            "wait for the upload to finish, or discard it",
        )
    with db.reader() as conn:
        instances, skipped = instances_and_skipped(conn, upload_id)
        if not instances:
            raise UploadError(
                422, f"there is nothing to send: no DICOM instance was found ({len(skipped)} file(s) skipped)"
            )
        blocked = _foreign(conn, p, {i.study_uid for i in instances}, {i.sop_uid for i in instances})
        conn.rollback()
    if blocked:
        raise UploadError(
            409,
            f"study {blocked[0]} is at the hub from another institution; it cannot be added "
            "to (remove its files from the upload)",
        )
    size = sum((staging.folder(upload_id) / i.staged_name).stat().st_size for i in instances)
    refusal = quota.refusal(p.institution_id, size) if quota is not None else None
    if refusal:
        raise UploadError(507, f"the hub cannot store this upload now: {refusal}")
    study_uids = list(dict.fromkeys(i.study_uid for i in instances))
    with db.engine.begin() as conn:
        ods = _check_choice(conn, p, choice)
        moved = conn.execute(
            update(_uploads)
            .where(_uploads.c.id == upload_id, _uploads.c.state == "open")
            .values(
                state="sending",
                destination_institution_id=choice.destination_institution_id,
                destination_node_id=choice.destination_node_id,
                priority=choice.priority,
                recipient=choice.recipient or None,
                message=choice.message,
            )
        ).rowcount
        if moved != 1:
            state = conn.execute(select(_uploads.c.state).where(_uploads.c.id == upload_id)).scalar()
            raise UploadError(409, f"this upload is {state}; it cannot be sent again")
        try:
            tid = open_transaction(
                conn,
                kind="upload",
                source_institution_id=p.institution_id,
                destination_institution_id=choice.destination_institution_id,
                sender_user_id=p.user_id,
                sender_name=p.username,
                study_uids=study_uids,
                subject=choice.subject,
                message=choice.message,
                priority=choice.priority,
                recipient=choice.recipient or None,
                recipient_user_id=choice.recipient_user_id,
                destination_node_id=choice.destination_node_id,
            )
        except TransactionError as exc:
            raise UploadError(422, str(exc)) from None
        conn.execute(update(_uploads).where(_uploads.c.id == upload_id).values(transaction_id=tid))
        for uid in study_uids:
            these = [i for i in instances if i.study_uid == uid]
            audit.record(
                conn,
                "upload.send",
                study_uid=uid,
                patient_id=these[0].info.get("patient_id", ""),
                object_type="upload",
                object_id=upload_id,
                detail=f"{len(these)} instance(s) to {ods}"
                + (f" node {choice.destination_node_id}" if choice.destination_node_id else "")
                + f", exchange {tid}",
                **p.audit_fields(),
            )
    return tid


class UploadWorker:
    """Stores sending uploads and expires old ones; one per `imex serve` process, sharing the work through
    leases in the database."""

    def __init__(
        self,
        config: Config,
        db: Database,
        ingest: Ingest,
        staging: Staging,
        worker_id: str,
        quota: Quota | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.ingest = ingest
        self.quota = quota
        self.staging = staging
        self.worker_id = worker_id[:128]
        # the same lease as the delivery workers': renewed with every stored file
        self.lease = float(lease_seconds or config["delivery.lease_seconds"])
        self.wake = threading.Event()
        self.stop = threading.Event()

    def run(self, stop: threading.Event, interval: float) -> None:
        self.stop = stop
        while not stop.is_set():
            try:
                while self.step() and not stop.is_set():
                    pass
                self.staging.expire()
            except Exception:
                log.exception("upload worker failed; continuing")
            self.wake.wait(interval)
            self.wake.clear()

    def _claim(self) -> int | None:
        rows = engine.claim(self.db, UPLOAD, self.worker_id, self.lease, scan=5)
        return int(rows[0].id) if rows else None

    def step(self) -> bool:
        """Store one sending upload; False when there was none."""
        upload_id = self._claim()
        if upload_id is None:
            return False
        try:
            self._store(upload_id)
        except OSError as exc:  # the disk: leave it for the next lease, it is retried
            log.warning("upload %s: storing stopped: %s", upload_id, exc)
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(_uploads)
                    .where(_uploads.c.id == upload_id)
                    .values(error=f"storing stopped, will retry: {exc}"[:2000])
                )
        return True

    def _store(self, upload_id: int) -> None:
        with self.db.reader() as conn:
            upload = conn.execute(select(_uploads).where(_uploads.c.id == upload_id)).one()
            instances, _ = instances_and_skipped(conn, upload_id)
            conn.rollback()
        source = Source(upload.institution_id, None, CALLING_AET, self.config["dicom.ae_title"])
        folder = self.staging.folder(upload_id)
        stored = sum(1 for i in instances if i.stored)  # a file stored but not yet marked is stored again (a duplicate)
        for inst in (i for i in instances if not i.stored):
            if self.stop.is_set():  # the hub is stopping: let the next process take it over at once
                with self.db.engine.begin() as conn:
                    engine.release(conn, UPLOAD, upload_id, self.worker_id)
                return
            data = (folder / inst.staged_name).read_bytes()
            try:
                meta = read_meta(data)
                syntax = meta[0x0010]
                fields = read_instance(data[dataset_offset(data) :], syntax)
            except (InvalidInstance, ValueError, struct.error) as exc:  # changed on disk since it was reviewed
                self._fail(upload_id, f"{inst.path} can no longer be read: {exc}")
                return
            chunks = chunks_to_store(data, meta, fields.sop_class_uid, fields.sop_uid, syntax, CALLING_AET)
            result = self.ingest.store_instance(chunks, syntax, fields, source)
            if self.quota is not None and result.outcome == "new":
                self.quota.stored(upload.institution_id, result.size)
            stored += 1
            with self.db.engine.begin() as conn:
                conn.execute(update(upload_files).where(UploadFile.id == inst.file_id).values(stored=True))
                conn.execute(update(_uploads).where(_uploads.c.id == upload_id).values(instances_stored=stored))
                engine.renew_in(conn, UPLOAD, upload_id, self.worker_id, self.lease)
        with self.db.engine.begin() as conn:
            engine.finish(conn, UPLOAD, upload_id, None, "sent", sent_at=utcnow(), error="", staged_bytes=0)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("upload %s stored: %d instance(s), exchange %s", upload_id, stored, upload.transaction_id)

    def _fail(self, upload_id: int, error: str) -> None:
        with self.db.engine.begin() as conn:
            engine.finish(conn, UPLOAD, upload_id, None, "failed", error=error[:2000])
        log.warning("upload %s failed: %s", upload_id, error)
