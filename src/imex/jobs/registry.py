"""Every durable queue of the hub, by name, for the operators' view (`imex jobs`, the admin page) and
/metrics. Each flow registers its queue where it declares it; the interface layer imports the flows, so
the registry is complete wherever it is read."""
from __future__ import annotations

from imex.jobs.queue import JobQueue

_QUEUES: dict[str, JobQueue] = {}


def register(queue: JobQueue) -> JobQueue:
    """Add a queue (returned, so a module can write `QUEUE = register(JobQueue(...))`)."""
    known = _QUEUES.get(queue.name)
    if known is not None and known.table is not queue.table:
        raise ValueError(f"two job queues are named {queue.name!r}")
    _QUEUES[queue.name] = queue
    return queue


def queues() -> list[JobQueue]:
    """The registered queues, by name."""
    return [_QUEUES[name] for name in sorted(_QUEUES)]


def get(name: str) -> JobQueue | None:
    return _QUEUES.get(name)
