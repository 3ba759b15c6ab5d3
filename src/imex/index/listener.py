"""The hub's DICOM listener: C-ECHO and C-STORE for every storage SOP class, and C-FIND, C-MOVE and C-GET
handed to the Query/Retrieve handler the hub sets (imex.qr).

The C-STORE handler keeps to the essentials: check the encoded dataset and write its bytes exactly as
received while they arrive (never holding them whole, never reading them back), index it, answer. The
sender is acknowledged only once the file is durable and indexed. Anything else (routing, delivery)
happens elsewhere, from the database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.presentation import StoragePresentationContexts

from imex import metrics
from imex.config import Config
from imex.dicom.acceptor import (
    CALLED_AE_NOT_RECOGNIZED,
    CALLING_AE_NOT_RECOGNIZED,
    STORAGE_COMMITMENT,
    VERIFICATION,
    Acceptor,
    QueryHandler,
    Request,
)
from imex.dicom.net import printable  # (importing it escapes pynetdicom's log records too)
from imex.dicom.parse import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_NOT_AUTHORIZED,
    STATUS_OUT_OF_RESOURCES,
    IndexFields,
    InstanceReader,
    InvalidInstance,
    attribute_tag,
)
from imex.dicom.part10 import file_meta
from imex.dicom.syntaxes import ACCEPTED
from imex.directory import NodeCache
from imex.index.ingest import Ingest, Receiving, Source
from imex.index.ownership import NotYourStudy
from imex.store.quota import Quota
from imex.tls.files import ServerContext, TlsFiles
from imex.tls.profile import peer_common_name

if TYPE_CHECKING:
    from imex.dicom.commitment import ReportHandler

log = logging.getLogger("imex.index.listener")

# while a dataset is being written, the store's free space is checked again every so many bytes, so that
# concurrent large datasets cannot fill the disk (the institution's quota is checked when it is whole)
_SPACE_CHECK_BYTES = 16 << 20


class _Incoming:
    """One C-STORE dataset as it arrives: each fragment is checked (imex.dicom.parse) and written to a
    temporary file in the blob store; `finish` stores and indexes it, or refuses it and leaves nothing."""

    def __init__(self, listener: DicomListener, request: Request) -> None:
        self.listener = listener
        self.request = request
        self.node = node = listener.nodes.by_aet(request.calling_aet)
        command = request.command
        self.sop_class = str(command.get("AffectedSOPClassUID", ""))
        self.sop_uid = str(command.get("AffectedSOPInstanceUID", ""))
        self.refusal: tuple[int, str] | None = None
        self.invalid = False  # the refusal is about the instance (counted and logged as such)
        self.reader: InstanceReader | None = None
        self.receiving: Receiving | None = None
        self.space_checked = 0  # bytes written when the free space was last checked
        if node is None:  # removed while the association was open
            self.refusal = 0x0124, f"calling AE title {request.calling_aet} is no longer registered"
            return
        if self.sop_class != request.abstract_syntax:
            self._refuse(0x0122, "SOP class not negotiated on this presentation context")
        elif not self.sop_uid:
            self._refuse(STATUS_CANNOT_UNDERSTAND, "C-STORE-RQ without Affected SOP Instance UID")
        if self.refusal is not None:
            return
        try:
            self.reader = InstanceReader(request.transfer_syntax, code_tag=listener.code_tag)
        except InvalidInstance as exc:
            self._refuse(exc.status, str(exc))
            return
        quota = listener.quota
        refusal = quota.refusal(node.institution_id, 0) if quota else None  # the disk is nearly full already
        if refusal:
            metrics.INSTANCES_REJECTED.inc()
            self.refusal = STATUS_OUT_OF_RESOURCES, refusal
            return
        try:  # the file meta group names the request's instance: the dataset must match it (checked)
            self.receiving = listener.ingest.receive(
                file_meta(self.sop_class, self.sop_uid, request.transfer_syntax, request.calling_aet)
            )
        except OSError as exc:
            log.error("cannot store instance %s: %s", printable(self.sop_uid), exc)
            self.refusal = STATUS_OUT_OF_RESOURCES, "hub storage unavailable; retry later"

    def _refuse(self, status: int, comment: str) -> None:
        self.refusal = status, comment
        self.invalid = True
        self.discard()

    def write(self, fragment: memoryview) -> None:
        if self.refusal is not None:
            return  # read and dropped: the answer comes when the dataset ends
        assert self.reader is not None and self.receiving is not None
        try:
            self.reader.feed(fragment)
        except InvalidInstance as exc:
            self._refuse(exc.status, str(exc))
            return
        try:
            self.receiving.write(fragment)
        except OSError as exc:
            log.error("cannot store instance %s: %s", printable(self.sop_uid), exc)
            self.refusal = STATUS_OUT_OF_RESOURCES, "hub storage unavailable; retry later"
            self.discard()
            return
        quota = self.listener.quota
        if quota is not None and self.receiving.size - self.space_checked >= _SPACE_CHECK_BYTES:
            self.space_checked = self.receiving.size
            assert self.node is not None
            refusal = quota.refusal(self.node.institution_id, 0)
            if refusal:
                metrics.INSTANCES_REJECTED.inc()
                self.refusal = STATUS_OUT_OF_RESOURCES, refusal
                self.discard()

    def discard(self) -> None:
        if self.receiving is not None:
            receiving, self.receiving = self.receiving, None
            receiving.discard()

    def finish(self) -> tuple[int, str]:
        """Store and index the whole dataset, or refuse it; the DICOM status and error comment."""
        try:
            return self._finish()
        finally:
            self.discard()  # refused, failed or stored: no temporary file stays

    def _finish(self) -> tuple[int, str]:
        if self.refusal is None:
            assert self.reader is not None
            try:
                fields = self.reader.finish(self.sop_class, self.sop_uid)
            except InvalidInstance as exc:
                self._refuse(exc.status, str(exc))
            else:
                return self._store(fields)
        assert self.refusal is not None
        if self.invalid:
            metrics.INSTANCES_REJECTED.inc()
            log.warning(
                "refused instance %s from %s: %s",
                printable(self.sop_uid),
                printable(self.request.calling_aet),
                printable(self.refusal[1]),
            )
        return self.refusal

    def _store(self, fields: IndexFields) -> tuple[int, str]:
        request, listener, node, receiving = self.request, self.listener, self.node, self.receiving
        assert receiving is not None and node is not None
        refusal = listener.quota.refusal(node.institution_id, receiving.size) if listener.quota else None
        if refusal:
            metrics.INSTANCES_REJECTED.inc()
            return STATUS_OUT_OF_RESOURCES, refusal
        try:
            stored = listener.ingest.store_received(
                receiving,
                request.transfer_syntax,
                fields,
                Source(node.institution_id, node.id, request.calling_aet, request.called_aet),
            )
        except NotYourStudy as exc:  # another institution's study (imex.index.ownership)
            metrics.INSTANCES_REJECTED.inc()
            log.warning(
                "refused instance %s from %s: %s",
                printable(fields.sop_uid),
                printable(request.calling_aet),
                printable(str(exc)),
            )
            return STATUS_NOT_AUTHORIZED, exc.comment
        except OSError as exc:
            log.error("cannot store instance %s: %s", printable(fields.sop_uid), exc)
            return STATUS_OUT_OF_RESOURCES, "hub storage unavailable; retry later"
        except Exception:
            log.exception("cannot index instance %s", printable(fields.sop_uid))
            return STATUS_OUT_OF_RESOURCES, "hub index unavailable; retry later"
        if listener.quota is not None and stored.outcome == "new":
            listener.quota.stored(node.institution_id, stored.size)
        metrics.INSTANCES_RECEIVED.labels(outcome=stored.outcome).inc()
        metrics.BYTES_RECEIVED.inc(stored.size)
        return 0x0000, ""


class DicomListener:
    """Accepts associations from registered nodes and stores what they send."""

    def __init__(self, config: Config, nodes: NodeCache, ingest: Ingest, quota: Quota | None = None) -> None:
        self.config = config
        self.nodes = nodes
        self.ingest = ingest
        self.quota = quota
        self.ae_title = config["dicom.ae_title"]
        self.code_tag = attribute_tag(config["routing.code_attribute"])
        self.server: Acceptor | None = None
        self.tls_server: Acceptor | None = None
        # Storage Commitment results (routing/confirm.py sets it): None refuses the SOP class
        self.commitment_reports: ReportHandler | None = None
        # C-FIND, C-MOVE and C-GET by registered nodes (imex.qr sets it): None leaves the models unoffered
        self.query_handler: QueryHandler | None = None

    def _on_event_report(self, request: Request) -> tuple[int, str]:
        from imex.dicom.commitment import answer_event_report

        c = request.command
        assert self.commitment_reports is not None  # start() answers reports only when it is set
        return answer_event_report(
            request.calling_aet,
            str(c.get("AffectedSOPClassUID", "")),
            str(c.get("AffectedSOPInstanceUID", "")),
            int(c.get("EventTypeID", 0)),
            request.dataset,
            request.transfer_syntax,
            self.commitment_reports,
        )

    def _policy(
        self, calling: str, called: str, peer: str, certificate: dict | None = None
    ) -> tuple[int, int, int] | None:
        node = self.nodes.by_aet(calling)
        if node is None:
            log.warning(
                "rejected association from %s: calling AE title '%s' is not a registered node",
                printable(peer),
                printable(calling),
            )
            return CALLING_AE_NOT_RECOGNIZED
        if certificate is None and node.tls:
            log.warning(
                "rejected association from %s (%s): node %s must use DICOM over TLS",
                printable(calling),
                printable(peer),
                node.name,
            )
            return CALLING_AE_NOT_RECOGNIZED
        if certificate is not None and peer_common_name(certificate) != node.name:
            log.warning(
                "rejected TLS association from %s (%s): its certificate is issued to '%s', not node %s",
                printable(calling),
                printable(peer),
                printable(peer_common_name(certificate)),
                node.name,
            )
            return CALLING_AE_NOT_RECOGNIZED
        if self.config["dicom.check_peer_address"] and not self.nodes.address_matches(node, peer):
            log.warning(
                "rejected association: AE title '%s' connected from %s, but node %s is at %s",
                printable(calling),
                printable(peer),
                node.name,
                node.host,
            )
            return CALLING_AE_NOT_RECOGNIZED
        if called.upper() != self.ae_title.upper() and self.nodes.alias(called) is None:
            log.warning(
                "rejected association from %s (%s): called AE title '%s' is neither %s nor an alias",
                printable(calling),
                printable(peer),
                printable(called),
                self.ae_title,
            )
            return CALLED_AE_NOT_RECOGNIZED
        return None

    def _open_store(self, request: Request) -> _Incoming:
        return _Incoming(self, request)

    def _on_store(self, request: Request) -> tuple[int, str]:
        assert isinstance(request.sink, _Incoming)
        return request.sink.finish()

    def start(self) -> None:
        syntaxes: dict[str, tuple[str, ...]] = {
            cx.abstract_syntax: tuple(ACCEPTED) for cx in StoragePresentationContexts if cx.abstract_syntax is not None
        }
        syntaxes[VERIFICATION] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
        reports = self._on_event_report if self.commitment_reports is not None else None
        if reports is not None:
            syntaxes[STORAGE_COMMITMENT] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
        address = (self.config["dicom.host"], self.config["dicom.port"])
        limits = {
            key: self.config[f"dicom.{key}"]
            for key in (
                "max_associations",
                "acse_timeout",
                "network_timeout",
                "max_pdu",
                "max_negotiating",
                "max_negotiating_per_address",
            )
        }
        self.server = Acceptor(
            *address,
            policy=self._policy,
            open_store=self._open_store,
            on_store=self._on_store,
            storage_syntaxes=syntaxes,
            per_caller_limit=self._caller_limit,
            on_event_report=reports,
            on_query=self.query_handler,
            **limits,
        )
        log.info("DICOM listener %s on %s:%s", self.ae_title, *address)
        if self.config["dicom.tls_port"]:
            files = TlsFiles.of(self.config)
            context = ServerContext(files.cert, files.key, client_ca=files.ca, crl=files.crl, require_client=True)
            self.tls_server = Acceptor(
                self.config["dicom.host"],
                self.config["dicom.tls_port"],
                policy=self._policy,
                open_store=self._open_store,
                on_store=self._on_store,
                storage_syntaxes=syntaxes,
                tls=context.get,
                per_caller_limit=self._caller_limit,
                on_event_report=reports,
                on_query=self.query_handler,
                **limits,
            )
            log.info("DICOM over TLS listener %s on %s:%s", self.ae_title, self.config["dicom.host"], self.tls_port)

    def _caller_limit(self, calling: str) -> int:
        node = self.nodes.by_aet(calling)
        own = node.max_associations if node is not None else None
        return int(own or self.config["dicom.max_associations_per_node"] or 0)

    @property
    def tls_port(self) -> int | None:
        return self.tls_server.server_address[1] if self.tls_server is not None else None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self.tls_server is not None:
            self.tls_server.shutdown()
            self.tls_server = None
