"""The hub as Query/Retrieve SCP for registered nodes: C-FIND, C-MOVE and C-GET in the node's scope,
each in the audit trail with the node, its institution and the keys asked.

- C-FIND answers from the index, up to `dicom.find_limit` matches (more is refused: narrow the query).
- C-MOVE goes to a node of the caller's institution only, through the durable delivery queue
  (imex.routing.on_demand): the response counts follow the transfer's items as the workers send them.
- C-GET sends over the caller's association, with the destination's header harmonisation, and records
  the import on the study's transfer to the caller.
- A study held for reconciliation for the institution is not retrievable until it is released.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.config import Config
from imex.db import Database
from imex.db.models import Instance, Node, Study, Transfer
from imex.dicom.net import printable
from imex.dicom.responder import (
    CANCELLED,
    IDENTIFIER_DOES_NOT_MATCH,
    MOVE_DESTINATION_UNKNOWN,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    OUT_OF_RESOURCES_SUBOPERATIONS,
    SUCCESS,
    UNABLE_TO_PROCESS,
    WARNING_SUBOPERATIONS,
    Final,
    InvalidIdentifier,
    QueryRequest,
    Responder,
    SubOperations,
)
from imex.dicom.scu import NoAcceptableContext, Outgoing, is_success
from imex.directory import NodeCache, NodeInfo
from imex.harmonise.prepare import Harmoniser
from imex.qr.find import count_matches, instances_to_retrieve, matches, node_principal
from imex.qr.keys import InvalidQuery, Query, parse
from imex.routing import on_demand
from imex.routing.reconcile import HELD
from imex.store import BlobStore

log = logging.getLogger("imex.qr")

_POLL_SECONDS = 0.2
_KEEPALIVE_SECONDS = 5.0


@dataclass(frozen=True)
class _Asked:
    node: NodeInfo
    request: QueryRequest
    query: Query


class QueryRetrieve:
    """The listener's Query/Retrieve handler (imex.dicom.acceptor.QueryHandler)."""

    def __init__(self, config: Config, db: Database, store: BlobStore, nodes: NodeCache, harmoniser: Harmoniser):
        self.config = config
        self.db = db
        self.store = store
        self.nodes = nodes
        self.harmoniser = harmoniser
        self.hub_aet = config["dicom.ae_title"]

    def __call__(self, request: QueryRequest, responder: Responder) -> Final:
        node = self.nodes.by_aet(request.calling_aet)
        if node is None:  # removed while the association was open
            return Final(NOT_AUTHORIZED, f"calling AE title {request.calling_aet} is no longer registered")
        service = request.service
        allowed = {"FIND": node.allow_find, "MOVE": node.allow_move, "GET": node.allow_get}[service]
        if not allowed:
            self._audit(node, service, "denied", f"C-{service} is not allowed for this node")
            return Final(NOT_AUTHORIZED, f"node {node.name} may not use C-{service} on the hub")
        try:
            query = parse(request.root, request.decode())
        except (InvalidIdentifier, InvalidQuery) as exc:
            self._audit(node, service, "failure", f"refused: {exc}")
            return Final(IDENTIFIER_DOES_NOT_MATCH, str(exc))
        asked = _Asked(node, request, query)
        if service == "FIND":
            return self._find(asked, responder)
        return self._retrieve(asked, responder)

    def _audit(self, node: NodeInfo, service: str, outcome: str, detail: str, study_uid: str = "") -> None:
        with self.db.engine.begin() as conn:
            audit.record(
                conn,
                f"dicom.{service.lower()}",
                outcome=outcome,
                username=f"node:{node.ae_title}",
                institution_id=node.institution_id,
                object_type="node",
                object_id=node.id,
                study_uid=study_uid,
                detail=printable(detail)[:4000],
            )

    # -- C-FIND ------------------------------------------------------------------------------------------

    def _find(self, asked: _Asked, responder: Responder) -> Final:
        node, query = asked.node, asked.query
        principal = node_principal(node)
        limit = int(self.config["dicom.find_limit"])
        keys = f"{query.root} root, {query.level} level: {query.asked or 'no keys'}"
        with self.db.read_sessions() as s:
            found = count_matches(s, principal, query, limit)
            if limit and found > limit:
                self._audit(node, "FIND", "failure", f"{keys}; more than {limit} matches")
                return Final(OUT_OF_RESOURCES, f"more than {limit} matches; narrow the query")
            sent = 0
            for answer in matches(s, principal, query, self.hub_aet):
                if responder.cancelled():
                    self._audit(node, "FIND", "success", f"{keys}; cancelled after {sent} matches")
                    return Final(CANCELLED, "")
                responder.pending(answer)
                sent += 1
        self._audit(node, "FIND", "success", f"{keys}; {sent} matches")
        return Final(SUCCESS)

    # -- C-MOVE and C-GET --------------------------------------------------------------------------------

    def _retrieve(self, asked: _Asked, responder: Responder) -> Final:
        node, query, service = asked.node, asked.query, asked.request.service
        keys = f"{query.root} root, {query.level} level: {query.asked or 'no keys'}"
        destination = node
        if service == "MOVE":
            target = self.nodes.by_aet(asked.request.move_destination)
            # an unknown AE title and another institution's node get the same answer: nothing to learn
            if target is None or not target.enabled or target.institution_id != node.institution_id:
                self._audit(node, "MOVE", "denied", f"{keys}; move destination {asked.request.move_destination}")
                return Final(
                    MOVE_DESTINATION_UNKNOWN,
                    f"move destination {asked.request.move_destination} is not a node of your institution",
                )
            destination = target
        with self.db.read_sessions() as s:
            try:
                found = instances_to_retrieve(s, node_principal(node), query)
            except InvalidQuery as exc:
                self._audit(node, service, "failure", f"refused: {exc}")
                return Final(IDENTIFIER_DOES_NOT_MATCH, str(exc))
            by_study: dict[int, list[Instance]] = defaultdict(list)
            studies: dict[int, Study] = {}
            for study, instance in found:
                by_study[study.id].append(instance)
                studies[study.id] = study
            held = self._held(s, list(studies), node.institution_id)
            s.expunge_all()
        if not found:
            self._audit(node, service, "success", f"{keys}; nothing matched")
            return Final(SUCCESS, "", SubOperations())
        if held:
            uid = studies[held[0]].study_uid
            self._audit(node, service, "failure", f"{keys}; held for reconciliation", study_uid=uid)
            return Final(UNABLE_TO_PROCESS, "study held for reconciliation: release it in the portal first")
        for study_id, study in studies.items():
            where = f" to {destination.ae_title}" if service == "MOVE" else ""
            self._audit(
                node, service, "success", f"{keys}; {len(by_study[study_id])} instances{where}", study.study_uid
            )
        if service == "MOVE":
            return self._move(asked, destination, studies, by_study, responder)
        return self._get(asked, studies, by_study, responder)

    def _held(self, s: Session, study_ids: list[int], institution_id: int) -> list[int]:
        """Studies whose transfer to one of the institution's nodes waits for reconciliation."""
        if not study_ids:
            return []
        return list(
            s.scalars(
                select(Transfer.study_id)
                .join(Node, Node.id == Transfer.destination_node_id)
                .where(Transfer.study_id.in_(study_ids), Transfer.state == HELD, Node.institution_id == institution_id)
            ).all()
        )

    def _move(
        self,
        asked: _Asked,
        destination: NodeInfo,
        studies: dict[int, Study],
        by_study: dict[int, list[Instance]],
        responder: Responder,
    ) -> Final:
        reason = f"retrieved by {asked.node.name} (C-MOVE)"
        plan: list[tuple[int, list[int]]] = []
        with self.db.engine.begin() as conn:
            for study_id, instances in by_study.items():
                ids = [i.id for i in instances]
                plan.append(
                    (on_demand.queue_retrieve(conn, study_id, destination.id, ids, reason, asked.node.name), ids)
                )
        total = sum(len(ids) for _, ids in plan)
        deadline = time.monotonic() + float(self.config["dicom.move_wait_seconds"])
        last: tuple | None = None
        last_sent = time.monotonic()
        while True:
            counts, errors, done = SubOperations(), [], True
            with self.db.reader() as conn:
                for transfer_id, ids in plan:
                    p = on_demand.progress(conn, transfer_id, ids)
                    counts.completed += p.sent - p.warning
                    counts.warning += p.warning
                    counts.failed += p.failed
                    stalled = (
                        p.state == HELD
                        or p.state in ("failed", "cancelled")
                        or (p.state == "pending" and p.attempts > 0 and p.last_error)
                    )
                    if p.pending and stalled:
                        counts.failed += p.pending
                        errors.append(p.last_error or f"the transfer is {p.state}")
                    elif p.pending:
                        done = False
                    if p.failed and p.last_error:
                        errors.append(p.last_error)
                conn.rollback()
            counts.remaining = max(total - counts.completed - counts.warning - counts.failed, 0)
            if done:
                break
            if responder.cancelled():
                return Final(CANCELLED, "the transfer continues on the hub's queue", counts)
            if time.monotonic() > deadline:
                counts.failed += counts.remaining
                errors.append("not delivered yet; the hub keeps sending")
                counts.remaining = 0
                break
            snapshot = (counts.completed, counts.warning, counts.failed)
            # a response when the counts change, and at least every few seconds while the transfer waits
            # its turn, so a caller's DIMSE timeout does not end a move that is progressing
            if snapshot != last or time.monotonic() - last_sent > _KEEPALIVE_SECONDS:
                responder.pending(counts=counts)
                last, last_sent = snapshot, time.monotonic()
            time.sleep(_POLL_SECONDS)
        if counts.failed:
            counts.failed_uids = self._unsent(plan)
        return _ending(counts, errors[0] if errors else "")

    def _unsent(self, plan: list[tuple[int, list[int]]]) -> list[str]:
        from imex.db.models import instances, items

        with self.db.reader() as conn:
            uids = []
            for transfer_id, ids in plan:
                uids += (
                    conn.execute(
                        select(instances.c.sop_uid)
                        .join(items, items.c.instance_id == instances.c.id)
                        .where(
                            items.c.transfer_id == transfer_id, items.c.instance_id.in_(ids), items.c.state != "sent"
                        )
                    )
                    .scalars()
                    .all()
                )
            conn.rollback()
        return uids

    def _get(
        self, asked: _Asked, studies: dict[int, Study], by_study: dict[int, list[Instance]], responder: Responder
    ) -> Final:
        node = asked.node
        counts = SubOperations(remaining=sum(len(v) for v in by_study.values()))
        errors: list[str] = []
        reason = f"retrieved by {node.name} (C-GET)"
        for study_id, instances in by_study.items():
            with self.db.reader() as conn:
                existing = on_demand.transfer_to(conn, study_id, node.id)
                prepared = (
                    self.harmoniser.for_transfer(self.db, self.store, existing[0])
                    if existing is not None
                    else self.harmoniser.for_study(conn, self.store, study_id, node.id)
                )
                conn.rollback()
            if prepared.hold:
                # the study needs reconciliation before it can go to this node: queued, the worker holds it
                with self.db.engine.begin() as conn:
                    on_demand.queue_retrieve(conn, study_id, node.id, [i.id for i in instances], reason, node.name)
                counts.remaining -= len(instances)
                counts.failed += len(instances)
                counts.failed_uids += [i.sop_uid for i in instances]
                errors.append("study held for reconciliation: release it in the portal first")
                continue
            coerce = prepared.coercion.apply if prepared.coercion is not None else None
            sent: list[int] = []
            sent_bytes = 0
            for instance in instances:
                if responder.cancelled():
                    self._record_get(study_id, node, sent, sent_bytes, reason)
                    return Final(CANCELLED, "", counts)
                item = Outgoing(
                    self.store.path(instance.blob_key),
                    instance.sop_class_uid,
                    instance.transfer_syntax_uid,
                    instance.sop_uid,
                    coerce,
                )
                counts.remaining -= 1
                try:
                    status, comment = responder.store(item)
                except NoAcceptableContext as exc:
                    status, comment = UNABLE_TO_PROCESS, str(exc)
                except OSError as exc:  # the stored file is unreadable
                    status, comment = UNABLE_TO_PROCESS, f"stored instance unreadable: {exc}"
                if status == SUCCESS:
                    counts.completed += 1
                elif is_success(status):
                    counts.warning += 1
                else:
                    counts.failed += 1
                    counts.failed_uids.append(instance.sop_uid)
                    errors.append(comment or f"status 0x{status:04X}")
                if is_success(status):
                    sent.append(instance.id)
                    sent_bytes += instance.size
                if counts.remaining:
                    responder.pending(counts=counts)
            self._record_get(study_id, node, sent, sent_bytes, reason)
        return _ending(counts, errors[0] if errors else "")

    def _record_get(self, study_id: int, node: NodeInfo, sent: list[int], sent_bytes: int, reason: str) -> None:
        if not sent:
            return
        with self.db.engine.begin() as conn:
            on_demand.record_retrieved(conn, study_id, node.id, sent, sent_bytes, reason)


def _ending(counts: SubOperations, error: str) -> Final:
    """The final status of a retrieve from its sub-operation counts (PS3.4 C.4.2.1.5, C.4.3.1.4)."""
    counts.remaining = 0
    if not counts.failed and not counts.warning:
        return Final(SUCCESS, "", counts)
    if counts.failed and not (counts.completed or counts.warning):
        return Final(OUT_OF_RESOURCES_SUBOPERATIONS, error, counts)
    return Final(WARNING_SUBOPERATIONS, error, counts)


__all__ = ["QueryRetrieve"]
