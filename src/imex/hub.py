"""`imex serve`: one process running the DICOM listener, the router, the delivery workers, the e-mail
sender and the HTTP listener. Several processes can share one PostgreSQL database and blob store;
everything they coordinate on is in the database."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import uvicorn

from imex.auth.oidc_config import providers_of
from imex.auth.scim import directories as scim_directories
from imex.config import Config
from imex.db import Database
from imex.directory import NodeCache, load_from_config
from imex.harmonise.prepare import Harmoniser
from imex.index.ingest import Ingest
from imex.index.listener import DicomListener
from imex.notify.email import EmailSender
from imex.retention import job as retention_job
from imex.retention.policy import RetentionPolicy
from imex.routing import escalation, health, queue
from imex.routing.router import Router
from imex.routing.rules import parse_rules
from imex.routing.worker import DeliveryWorker
from imex.store import BlobStore
from imex.store.quota import Quota
from imex.tls import files as tls_files
from imex.web.app import create_app

log = logging.getLogger("imex")


def open_database(config: Config) -> Database:
    db = Database(config.database_url)
    db.migrate()
    return db


class Hub:
    """Everything `imex serve` runs; `start()` returns once the listeners accept connections."""

    def __init__(self, config: Config, db: Database | None = None) -> None:
        self.config = config
        self.db = db or open_database(config)
        load_from_config(self.db, config.institutions, config.nodes)
        self.rules = parse_rules(config.rules)
        self.harmoniser = Harmoniser.from_config(config)  # a bad [[harmonise]] rule stops start-up
        tls_files.check(config)  # so does a missing or unreadable TLS certificate or key
        providers_of(config)  # and a bad [[oidc]] identity provider table
        # and a bad [[scim]] directory table, or one naming an unknown institution or role
        self.scim_directories = scim_directories.parse_directories(config.scim, os.environ)
        with self.db.sessions() as s:
            scim_directories.check_directories(s, self.scim_directories)
            s.commit()
        self.store = BlobStore(config.store_path, fsync=config["store.fsync"])
        self.nodes = NodeCache(self.db)
        self.ingest = Ingest(self.db, self.store)
        self.quota = Quota(self.db, self.store.root, config["store.min_free_bytes"])
        self.listener = DicomListener(config, self.nodes, self.ingest, self.quota)
        from imex.routing.confirm import Confirmer  # confirmed delivery: asks, and takes reports

        self.confirmer = Confirmer(
            config, self.db, f"{socket.gethostname()}:{os.getpid()}/confirm", self.harmoniser, self.store
        )
        self.listener.commitment_reports = self.confirmer.reports
        from imex.qr.service import QueryRetrieve  # registered nodes search and retrieve from the hub

        self.listener.query_handler = QueryRetrieve(config, self.db, self.store, self.nodes, self.harmoniser)
        self.router = Router(
            self.db,
            self.rules,
            config["dicom.ae_title"],
            config["routing.code_attribute"],
            config["routing.stable_seconds"],
        )
        self.router.retention = RetentionPolicy.from_config(config)
        self.emails = EmailSender(config, self.db)
        # HL7 reports: RIS endpoints from [[ris]], the MLLP listener and the report outbox sender
        from imex.reports.runner import ReportService

        self.reports = ReportService(config, self.db, self.store, self.harmoniser)
        self.work_queued = threading.Event()
        self.router.on_queued = self.work_queued.set
        self.stop_event = threading.Event()
        self._health_due = 0.0  # when the destination-down check runs next (routing.health)
        self.threads: list[threading.Thread] = []
        self.http: uvicorn.Server | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def _loop(self, name: str, step, interval: float) -> None:
        while not self.stop_event.is_set():
            try:
                step()
            except Exception:
                log.exception("%s failed; continuing", name)
            self.stop_event.wait(interval)

    def _retention(self) -> None:
        retention_job.run_once(self.db, self.store, batch=self.config["retention.batch"])

    def _housekeeping(self) -> None:
        self.router.route_stable()
        queue.reap_expired_leases(self.db)
        escalation.escalate_overdue(self.db, self.config["priority.escalate_after_seconds"])
        minutes = self.config["alerts.destination_down_minutes"]
        if minutes > 0 and time.monotonic() >= self._health_due:  # a few times per alert period, at most 30 s apart
            self._health_due = time.monotonic() + min(30.0, max(0.1, minutes * 15))
            health.alert_down(self.db, minutes)

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self) -> None:
        removed = self.store.clean_temporary()
        if removed:
            log.info("removed %d partial blob(s) left by an interrupted write", removed)
        self.listener.start()
        self.reports.start(self._spawn, self._loop, self.stop_event)
        self._spawn("router", self._loop, "router", self._housekeeping, self.config["routing.scan_interval"])
        for i in range(self.config["delivery.workers"]):
            worker = DeliveryWorker(
                self.config,
                self.db,
                self.store,
                f"{self.worker_id}/{i}",
                wake=self.work_queued,
                harmoniser=self.harmoniser,
            )
            self._spawn(f"delivery-{i}", worker.run, self.stop_event)
        self._spawn("email", self.emails.run, self.stop_event)
        from imex.exchanges import retrievals  # C-MOVEs from institutions' PACS for exchanges

        for i in range(self.config["exchange.retrieve_workers"]):
            fetcher = retrievals.RetrievalWorker(self.config, self.db, f"{self.worker_id}/r{i}")
            self._spawn(f"retrieval-{i}", fetcher.run, self.stop_event)
        self._spawn(
            "retrieval-leases",
            self._loop,
            "retrieval lease check",
            lambda: retrievals.reap_expired_leases(self.db),
            2.0,
        )
        self._spawn(
            "confirm",
            self._loop,
            "delivery confirmation",
            self.confirmer.run_once,
            self.config["confirm.scan_interval"],
        )
        self._spawn("retention", self._loop, "retention", self._retention, self.config["retention.scan_interval"])
        from imex.requests import expiry as request_jobs  # image requests: fulfilled when delivered, expired
        from imex.requests import lifecycle as requests

        requests.register_store(self.db.engine, self.store)  # matching reads Other Patient IDs from headers
        self._spawn(
            "requests",
            self._loop,
            "image request job",
            lambda: request_jobs.run_once(self.db),
            self.config["requests.scan_interval"],
        )
        from imex.upload.send import UploadWorker  # uploads from the browser: stored and sent, or expired
        from imex.upload.staging import Staging

        self.uploads = UploadWorker(
            self.config,
            self.db,
            self.ingest,
            Staging(self.db, self.config),
            f"{self.worker_id}/upload",
            quota=self.quota,
        )
        self._spawn("uploads", self.uploads.run, self.stop_event, self.config["upload.scan_interval"])
        from imex.locator.runner import LocatorService  # the patient imaging locator: feeds and view cache

        self.locator = LocatorService(self.config, self.db, self.store)
        self.locator.start(self._spawn, self._loop)
        from imex.notify import (
            certificates as expiry,  # certificates about to expire alert admins; the CRL is kept fresh
        )

        self._spawn(
            "tls-expiry", self._loop, "certificate expiry check", lambda: expiry.check(self.db, self.config), 3600.0
        )
        if self.config["http.port"]:
            app = create_app(self)
            from imex.web.server import uvicorn_config

            # uvicorn (>= 0.29) takes signals only on the main thread: in its own thread it leaves the hub's
            self.http = uvicorn.Server(uvicorn_config(app, self.config))
            self._spawn("http", self.http.run)
            deadline = time.monotonic() + 15
            while not self.http.started and time.monotonic() < deadline:
                time.sleep(0.05)
        log.info(
            "imex hub %s ready: DICOM %s:%s, HTTP %s:%s",
            self.worker_id,
            self.config["dicom.host"],
            self.listener.port,
            self.config["http.host"],
            self.config["http.port"],
        )

    def stop(self) -> None:
        self.stop_event.set()
        self.work_queued.set()  # idle workers see the stop at once
        if getattr(self, "uploads", None) is not None:
            self.uploads.wake.set()
        self.listener.stop()
        self.reports.stop()
        if getattr(self, "locator", None) is not None:
            self.locator.stop()
        if self.http is not None:
            self.http.should_exit = True
        for thread in self.threads:
            thread.join(timeout=30)
        self.db.dispose()

    def wait(self) -> None:
        """Block until stop() or a signal (the CLI installs SIGTERM/SIGINT handlers that call stop)."""
        while not self.stop_event.is_set():
            self.stop_event.wait(1.0)
