"""The registry of what follows what: a flow announces an event and the flows that care subscribe to it, so
that no flow imports the ones that follow it (delivery does not import the report forwarder; the router
does not import the exchanges).

Handlers run synchronously, in the announcer's thread and database transaction (an outbox): an e-mail
queued or a report delivery created by a handler commits or rolls back with the change that caused it, so
an effect that must not be lost cannot be. Anything slow that a handler starts goes through a durable
queue (imex.jobs), never inline.

Two kinds of call:
- `emit(name, conn, **payload)`: every handler runs, in the order of their `order` (then registration).
- `first(name, conn, **payload)`: a hook that decides something; handlers run in order until one returns
  a value other than None, and that value is the answer (the router asks "does this study belong to an
  exchange?" this way).

Subscribers declare themselves with `@on("transfer.delivered")` in their own modules; the modules that
hold subscribers are listed once in `SUBSCRIBERS` and imported the first time an event is announced, so a
process that announces an event always has every subscriber, whichever modules it imported itself.
"""

from __future__ import annotations

import importlib
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., Any]

# Every event, with what it carries (keyword arguments after the connection).
EVENTS: dict[str, str] = {
    "study.stable": "study_id, study (row): a study stopped receiving; hook: a routing decision or None",
    "study.filing": "study_id, names, who: a study being routed names sharing folders (called AE titles, "
    "rule targets); returns the names of the folders it was filed in",
    "study.forwarded": "study_id, institution_id, calling_aet, called_aet: an institution the hub delivered a "
    "study to sends it on; the hub sends its own copy where the called AE title says",
    "transfer.delivered": "transfer_id, announce: every instance of a transfer reached its destination; "
    "announce is False for a re-send after a confirmation round",
    "transfer.failed": "transfer_id: a transfer gave up after its attempts",
    "transfer.confirmed": "transfer_id: the destination confirmed it holds every instance",
    "report.received": "report_id: a report pushed by a RIS was stored",
    "hl7.received": "(no connection) db, data, peer: hook: the Outcome (ACK) of a message another flow "
    "than reports answers (study notifications for the locator), or None",
    "quota.reached": "institution_id, used, quota: an institution's studies are refused (over its quota)",
    "retention.pass": "now: a retention pass runs; flows expire what they keep with their own times and "
    "return how many they let go",
}

# Modules that subscribe to events: imported on the first announcement (see the module docstring).
SUBSCRIBERS: tuple[str, ...] = (
    "imex.notify.alerts",
    "imex.reports.receive",
    "imex.routing.confirm",
    "imex.routing.router",
    "imex.exchanges.arrivals",
    "imex.requests.arrivals",
    "imex.folders.manage",
    "imex.locator.ris_feed",
)


@dataclass(frozen=True)
class _Subscription:
    handler: Handler
    order: int


_handlers: dict[str, list[_Subscription]] = defaultdict(list)
_loaded = False
_lock = threading.Lock()


def on(name: str, order: int = 100) -> Callable[[Handler], Handler]:
    """Subscribe the decorated function to event `name`; lower `order` runs first."""
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}: declare it in imex.events.EVENTS")

    def register(handler: Handler) -> Handler:
        subs = _handlers[name]
        if all(s.handler is not handler for s in subs):
            subs.append(_Subscription(handler, order))
            subs.sort(key=lambda s: s.order)  # stable: equal orders keep their registration order
        return handler

    return register


def _load() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if not _loaded:
            for module in SUBSCRIBERS:
                importlib.import_module(module)
            _loaded = True


def _subscribers(name: str) -> list[_Subscription]:
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}")
    _load()
    return list(_handlers.get(name, ()))


def emit(name: str, conn: Any, **payload: Any) -> list[Any]:
    """Run every handler of `name` in the caller's transaction; an exception rolls the whole change back.
    Returns what the handlers returned (counts, for a caller that reports them)."""
    return [sub.handler(conn, **payload) for sub in _subscribers(name)]


def first(name: str, conn: Any, **payload: Any) -> Any:
    """Ask the handlers of hook `name` in order; the first answer that is not None, or None."""
    for sub in _subscribers(name):
        answer = sub.handler(conn, **payload)
        if answer is not None:
            return answer
    return None


def subscribers(name: str) -> list[str]:
    """The handlers of an event, as module.function names (for the architecture docs and tests)."""
    return [f"{s.handler.__module__}.{s.handler.__qualname__}" for s in _subscribers(name)]
