"""The hub's DICOM listener: C-ECHO and C-STORE for every storage SOP class.

The C-STORE handler keeps to the essentials: validate the encoded dataset, store its bytes exactly as
received, index it, answer. Anything else (routing, delivery) happens elsewhere, from the database.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from imex import metrics
from imex.config import Config
from imex.dicom import net
from imex.dicom.net import (
    CALLED_AE_NOT_RECOGNIZED,
    CALLING_AE_NOT_RECOGNIZED,
    Rejection,
)
from imex.dicom.parse import (
    STATUS_OUT_OF_RESOURCES,
    InvalidInstance,
    attribute_tag,
    read_instance,
)
from imex.dicom.part10 import file_meta
from imex.dicom.syntaxes import ACCEPTED
from imex.directory import NodeCache
from imex.index.ingest import Ingest, Source

log = logging.getLogger("imex.dicom.scp")


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]  # LO: 64 characters at most
    return ds


class DicomListener:
    """Accepts associations from registered nodes and stores what they send."""

    def __init__(self, config: Config, nodes: NodeCache, ingest: Ingest) -> None:
        net.install()
        self.config = config
        self.nodes = nodes
        self.ingest = ingest
        self.ae_title = config["dicom.ae_title"]
        self.code_tag = attribute_tag(config["routing.code_attribute"])
        self.server: ThreadedAssociationServer | None = None
        self._started = threading.Event()

    def _policy(self, calling: str, called: str, peer: str) -> Rejection | None:
        node = self.nodes.by_aet(calling)
        if node is None:
            log.warning("rejected association from %s: calling AE title %r is not a registered node", peer, calling)
            return Rejection(*CALLING_AE_NOT_RECOGNIZED, "unknown calling AE title")
        if self.config["dicom.check_peer_address"] and not self.nodes.address_matches(node, peer):
            log.warning("rejected association: AE title %r connected from %s, but node %s is at %s",
                        calling, peer, node.name, node.host)
            return Rejection(*CALLING_AE_NOT_RECOGNIZED, "calling AE title at an unexpected address")
        if called.upper() != self.ae_title.upper() and self.nodes.alias(called) is None:
            log.warning("rejected association from %s (%s): called AE title %r is neither %s nor an alias",
                        calling, peer, called, self.ae_title)
            return Rejection(*CALLED_AE_NOT_RECOGNIZED, "unknown called AE title")
        return None

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> int | Dataset:
        assoc = event.assoc
        calling = (assoc.requestor.ae_title or "").strip()
        called = (assoc.requestor.primitive.called_ae_title or "").strip()
        node = self.nodes.by_aet(calling)
        if node is None:  # removed while the association was open
            return _failure(0x0124, f"calling AE title {calling} is no longer registered")
        request = event.request
        context = event.context
        if request.AffectedSOPClassUID != context.abstract_syntax:
            metrics.INSTANCES_REJECTED.inc()
            return _failure(0x0122, "SOP class not negotiated on this presentation context")
        try:
            dataset = request.DataSet.getvalue()
            fields = read_instance(
                dataset, str(context.transfer_syntax),
                expected_sop_class=request.AffectedSOPClassUID, expected_sop_uid=request.AffectedSOPInstanceUID,
                code_tag=self.code_tag,
            )
        except InvalidInstance as exc:
            metrics.INSTANCES_REJECTED.inc()
            log.warning("refused instance %s from %s: %s", request.AffectedSOPInstanceUID, calling, exc)
            return _failure(exc.status, str(exc))
        try:
            stored = self.ingest.store_instance(
                (file_meta(fields.sop_class_uid, fields.sop_uid, str(context.transfer_syntax), calling), dataset),
                str(context.transfer_syntax), fields,
                Source(node.institution_id, node.id, calling, called),
            )
        except OSError as exc:
            log.error("cannot store instance %s: %s", fields.sop_uid, exc)
            return _failure(STATUS_OUT_OF_RESOURCES, "hub storage unavailable; retry later")
        except Exception:
            log.exception("cannot index instance %s", fields.sop_uid)
            return _failure(STATUS_OUT_OF_RESOURCES, "hub index unavailable; retry later")
        metrics.INSTANCES_RECEIVED.labels(outcome=stored.outcome).inc()
        metrics.BYTES_RECEIVED.inc(stored.size)
        return 0x0000

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.config["dicom.max_pdu"]
        ae.maximum_associations = self.config["dicom.max_associations"]
        ae.acse_timeout = self.config["dicom.acse_timeout"]
        ae.dimse_timeout = self.config["dicom.dimse_timeout"]
        ae.network_timeout = self.config["dicom.network_timeout"]
        ae.add_supported_context(Verification)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, list(ACCEPTED))
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store)]
        address = (self.config["dicom.host"], self.config["dicom.port"])
        self.server = ae.start_server(address, block=False, evt_handlers=handlers)
        self.server.imex_policy = self._policy  # type: ignore[attr-defined]
        log.info("DICOM listener %s on %s:%s", self.ae_title, *address)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
