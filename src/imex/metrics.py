"""Prometheus metrics of this process, served at GET /metrics. Queue depths come from the database at
scrape time (see portal.app), so they are right whichever process did the work."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

INSTANCES_RECEIVED = Counter(
    "imex_instances_received",
    "Instances received over DICOM, by outcome (new, replaced, duplicate).",
    ["outcome"],
    registry=REGISTRY,
)
INSTANCES_REJECTED = Counter(
    "imex_instances_rejected", "Instances refused with a DICOM failure status.", registry=REGISTRY
)
BYTES_RECEIVED = Counter("imex_bytes_received", "Bytes of instances stored.", registry=REGISTRY)
INSTANCES_SENT = Counter("imex_instances_sent", "Instances delivered to destinations.", registry=REGISTRY)
BYTES_SENT = Counter("imex_bytes_sent", "Bytes of instances delivered to destinations.", registry=REGISTRY)
TRANSFERS_FINISHED = Counter(
    "imex_transfers_finished", "Transfers that reached a final state, by state.", ["state"], registry=REGISTRY
)
DELIVERY_LATENCY = Histogram(
    "imex_delivery_latency_seconds",
    "From the last instance of a study reaching the hub to its delivery at a destination.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
    registry=REGISTRY,
)
