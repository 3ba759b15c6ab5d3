"""What `imex serve` runs for HL7 reports: the RIS endpoints from imex.toml, the MLLP listener, the
report sender thread and the housekeeping (attaching waiting reports, querying RIS for missing ones)."""
from __future__ import annotations

import logging
import threading

from imex.config import Config
from imex.db import Database
from imex.hl7.mllp import MllpListener
from imex.reports import query as retrieve
from imex.reports import receive as store
from imex.reports.endpoints import load_ris_from_config
from imex.reports.forward import ReportSender
from imex.store import BlobStore
from imex.tls.files import mllp_context

log = logging.getLogger("imex.hl7")


class ReportService:
    def __init__(self, config: Config, db: Database, blobs: BlobStore, harmoniser=None) -> None:  # type: ignore[no-untyped-def]
        self.config = config
        self.db = db
        load_ris_from_config(db, config.ris)
        self.sender = ReportSender(config, db, blobs, harmoniser)
        self.listener: MllpListener | None = None
        if config["hl7.port"]:
            self.listener = MllpListener(
                store.handler(db, on_report=self.sender.wake.set), config["hl7.host"], config["hl7.port"],
                max_bytes=config["hl7.max_message_bytes"], idle_timeout=config["hl7.idle_timeout"],
                ssl_context=mllp_context(config))

    @property
    def port(self) -> int | None:
        return self.listener.port if self.listener is not None else None

    def housekeeping(self) -> None:
        if store.match_waiting(self.db):
            self.sender.wake.set()
        retrieve.run_once(self.db, self.config)

    def start(self, spawn, loop, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
        if self.listener is not None:
            self.listener.start()
            log.info("HL7 MLLP listener on %s:%s%s", self.config["hl7.host"], self.listener.port,
                     " (TLS)" if self.listener.ssl is not None else "")
        spawn("reports", self.sender.run, stop)
        spawn("report-matcher", loop, "report matcher", self.housekeeping, max(self.config["routing.scan_interval"], 0.2))

    def stop(self) -> None:
        self.sender.wake.set()
        if self.listener is not None:
            self.listener.stop()
