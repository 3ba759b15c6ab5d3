"""Every durable queue of the hub, by name, for the operators' view (`imex jobs`, the admin page) and
/metrics. Each flow declares and registers its queue in its own module; the modules that declare queues
are listed once in `QUEUE_MODULES` and imported the first time the registry is read, so the list is
complete in every process, whichever flows it happened to import."""

from __future__ import annotations

import importlib
import threading

from imex.jobs.queue import JobQueue

QUEUE_MODULES: tuple[str, ...] = (
    "imex.routing.queue",
    "imex.routing.confirm",
    "imex.exchanges.retrievals",
    "imex.reports.forward",
    "imex.reports.query",
    "imex.notify.email",
    "imex.upload.send",
    "imex.locator.sweep",
)

_QUEUES: dict[str, JobQueue] = {}
_loaded = False
_lock = threading.Lock()


def register(queue: JobQueue) -> JobQueue:
    """Add a queue (returned, so a module can write `QUEUE = register(JobQueue(...))`)."""
    known = _QUEUES.get(queue.name)
    if known is not None and known.table is not queue.table:
        raise ValueError(f"two job queues are named {queue.name!r}")
    _QUEUES[queue.name] = queue
    return queue


def _load() -> None:
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                for module in QUEUE_MODULES:
                    importlib.import_module(module)
                _loaded = True


def queues() -> list[JobQueue]:
    """The registered queues, by name."""
    _load()
    return [_QUEUES[name] for name in sorted(_QUEUES)]


def get(name: str) -> JobQueue | None:
    _load()
    return _QUEUES.get(name)
