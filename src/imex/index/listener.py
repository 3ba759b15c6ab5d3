"""The hub's DICOM listener: C-ECHO and C-STORE for every storage SOP class.

The C-STORE handler keeps to the essentials: validate the encoded dataset, store its bytes exactly as
received, index it, answer. Anything else (routing, delivery) happens elsewhere, from the database.
"""
from __future__ import annotations

import logging

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
    Request,
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
from imex.store.quota import Quota
from imex.tls.files import ServerContext, TlsFiles
from imex.tls.profile import peer_common_name

log = logging.getLogger("imex.index.listener")


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
        self.commitment_reports = None

    def _on_event_report(self, request: Request) -> tuple[int, str]:
        from imex.dicom.commitment import answer_event_report

        c = request.command
        return answer_event_report(request.calling_aet, str(c.get("AffectedSOPClassUID", "")),
                                   str(c.get("AffectedSOPInstanceUID", "")), int(c.get("EventTypeID", 0)),
                                   request.dataset, request.transfer_syntax, self.commitment_reports)

    def _policy(self, calling: str, called: str, peer: str, certificate: dict | None = None) \
            -> tuple[int, int, int] | None:
        node = self.nodes.by_aet(calling)
        if node is None:
            log.warning("rejected association from %s: calling AE title %r is not a registered node", peer, calling)
            return CALLING_AE_NOT_RECOGNIZED
        if certificate is None and node.tls:
            log.warning("rejected association from %s (%s): node %s must use DICOM over TLS", calling, peer, node.name)
            return CALLING_AE_NOT_RECOGNIZED
        if certificate is not None and peer_common_name(certificate) != node.name:
            log.warning("rejected TLS association from %s (%s): its certificate is issued to %r, not node %s",
                        calling, peer, peer_common_name(certificate), node.name)
            return CALLING_AE_NOT_RECOGNIZED
        if self.config["dicom.check_peer_address"] and not self.nodes.address_matches(node, peer):
            log.warning("rejected association: AE title %r connected from %s, but node %s is at %s",
                        calling, peer, node.name, node.host)
            return CALLING_AE_NOT_RECOGNIZED
        if called.upper() != self.ae_title.upper() and self.nodes.alias(called) is None:
            log.warning("rejected association from %s (%s): called AE title %r is neither %s nor an alias",
                        calling, peer, called, self.ae_title)
            return CALLED_AE_NOT_RECOGNIZED
        return None

    def _on_store(self, request: Request) -> tuple[int, str]:
        calling = request.calling_aet
        node = self.nodes.by_aet(calling)
        if node is None:  # removed while the association was open
            return 0x0124, f"calling AE title {calling} is no longer registered"
        command = request.command
        sop_class = str(command.get("AffectedSOPClassUID", ""))
        sop_uid = str(command.get("AffectedSOPInstanceUID", ""))
        if sop_class != request.abstract_syntax:
            metrics.INSTANCES_REJECTED.inc()
            return 0x0122, "SOP class not negotiated on this presentation context"
        try:
            fields = read_instance(request.dataset, request.transfer_syntax, expected_sop_class=sop_class,
                                   expected_sop_uid=sop_uid, code_tag=self.code_tag)
        except InvalidInstance as exc:
            metrics.INSTANCES_REJECTED.inc()
            log.warning("refused instance %s from %s: %s", sop_uid, calling, exc)
            return exc.status, str(exc)
        refusal = self.quota.refusal(node.institution_id, len(request.dataset)) if self.quota else None
        if refusal:
            metrics.INSTANCES_REJECTED.inc()
            return STATUS_OUT_OF_RESOURCES, refusal
        try:
            stored = self.ingest.store_instance(
                (file_meta(fields.sop_class_uid, fields.sop_uid, request.transfer_syntax, calling), request.dataset),
                request.transfer_syntax, fields, Source(node.institution_id, node.id, calling, request.called_aet),
            )
        except OSError as exc:
            log.error("cannot store instance %s: %s", fields.sop_uid, exc)
            return STATUS_OUT_OF_RESOURCES, "hub storage unavailable; retry later"
        except Exception:
            log.exception("cannot index instance %s", fields.sop_uid)
            return STATUS_OUT_OF_RESOURCES, "hub index unavailable; retry later"
        if self.quota is not None and stored.outcome == "new":
            self.quota.stored(node.institution_id, stored.size)
        metrics.INSTANCES_RECEIVED.labels(outcome=stored.outcome).inc()
        metrics.BYTES_RECEIVED.inc(stored.size)
        return 0x0000, ""

    def start(self) -> None:
        syntaxes = {cx.abstract_syntax: tuple(ACCEPTED) for cx in StoragePresentationContexts}
        syntaxes[VERIFICATION] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
        reports = self._on_event_report if self.commitment_reports is not None else None
        if reports is not None:
            syntaxes[STORAGE_COMMITMENT] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
        address = (self.config["dicom.host"], self.config["dicom.port"])
        self.server = Acceptor(
            *address, policy=self._policy, on_store=self._on_store, storage_syntaxes=syntaxes,
            max_associations=self.config["dicom.max_associations"], acse_timeout=self.config["dicom.acse_timeout"],
            network_timeout=self.config["dicom.network_timeout"], max_pdu=self.config["dicom.max_pdu"],
            per_caller_limit=self._caller_limit, on_event_report=reports)
        log.info("DICOM listener %s on %s:%s", self.ae_title, *address)
        if self.config["dicom.tls_port"]:
            files = TlsFiles.of(self.config)
            context = ServerContext(files.cert, files.key, client_ca=files.ca, crl=files.crl, require_client=True)
            self.tls_server = Acceptor(
                self.config["dicom.host"], self.config["dicom.tls_port"], policy=self._policy,
                on_store=self._on_store, storage_syntaxes=syntaxes,
                max_associations=self.config["dicom.max_associations"],
                acse_timeout=self.config["dicom.acse_timeout"], network_timeout=self.config["dicom.network_timeout"],
                max_pdu=self.config["dicom.max_pdu"], tls=context.get, per_caller_limit=self._caller_limit,
                on_event_report=reports)
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
