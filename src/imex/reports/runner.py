"""What `imex serve` runs for HL7 reports: the RIS endpoints from imex.toml, the MLLP listener, the
report sender thread and the housekeeping (attaching waiting reports, querying RIS for missing ones)."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from imex.config import Config
from imex.db import Database
from imex.db.models import ris_endpoints
from imex.directory import addresses, normal_ip
from imex.hl7.mllp import MllpListener
from imex.reports import query as retrieve
from imex.reports import receive as store
from imex.reports.endpoints import load_ris_from_config
from imex.reports.forward import ReportSender
from imex.store import BlobStore
from imex.tls.files import mllp_context

log = logging.getLogger("imex.hl7")


class RisAddresses:
    """Whether an address may open an MLLP connection: it is the peer_host of an enabled RIS endpoint (an
    endpoint without one may connect from anywhere, as it may send from anywhere). Read from the database
    without the write lock every few seconds, and again (at most a few times a second) before refusing,
    so an endpoint just added is let in; names are resolved at most once a minute."""

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._lock = threading.Lock()
        self._loaded = -1e9
        self._hosts: list[str] = []
        self._resolved: dict[str, tuple[float, set[str]]] = {}

    def _load(self) -> None:
        with self.db.reader() as conn:
            hosts = list(
                conn.execute(select(ris_endpoints.c.peer_host).where(ris_endpoints.c.enabled.is_(True))).scalars()
            )
            conn.rollback()
        self._hosts = [h.strip() for h in hosts]
        self._loaded = time.monotonic()

    def _addresses(self, host: str) -> set[str]:
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is None or now - cached[0] > 60:
            cached = (now, {normal_ip(a) for a in addresses(host)})
            self._resolved[host] = cached
        return cached[1]

    def _matches(self, peer: str) -> bool:
        return any(not host or peer in self._addresses(host) for host in self._hosts)

    def __call__(self, peer: str) -> bool:
        peer = normal_ip(peer)
        with self._lock:
            age = time.monotonic() - self._loaded
            if age > self.ttl:
                self._load()
            elif self._matches(peer):
                return True
            elif age > 0.25:
                self._load()
            return self._matches(peer)


class ReportService:
    def __init__(self, config: Config, db: Database, blobs: BlobStore, harmoniser=None) -> None:
        self.config = config
        self.db = db
        load_ris_from_config(db, config.ris)
        self.sender = ReportSender(config, db, blobs, harmoniser)
        self.listener: MllpListener | None = None
        if config["hl7.port"]:
            self.listener = MllpListener(
                store.handler(db, on_report=self.sender.wake.set),
                config["hl7.host"],
                config["hl7.port"],
                max_bytes=config["hl7.max_message_bytes"],
                idle_timeout=config["hl7.idle_timeout"],
                message_timeout=config["hl7.message_timeout"],
                max_connections=config["hl7.max_connections"],
                max_connections_per_address=config["hl7.max_connections_per_address"],
                allow=RisAddresses(db),
                ssl_context=mllp_context(config),
            )

    @property
    def port(self) -> int | None:
        return self.listener.port if self.listener is not None else None

    def housekeeping(self) -> None:
        if store.match_waiting(self.db):
            self.sender.wake.set()
        retrieve.run_once(self.db, self.config)

    def start(self, spawn, loop, stop: threading.Event) -> None:
        if self.listener is not None:
            self.listener.start()
            log.info(
                "HL7 MLLP listener on %s:%s%s",
                self.config["hl7.host"],
                self.listener.port,
                " (TLS)" if self.listener.ssl is not None else "",
            )
        spawn("reports", self.sender.run, stop)
        spawn(
            "report-matcher", loop, "report matcher", self.housekeeping, max(self.config["routing.scan_interval"], 0.2)
        )

    def stop(self) -> None:
        self.sender.wake.set()
        if self.listener is not None:
            self.listener.stop()
