"""Per-address limit on failed sign-ins, on top of the per-account lockout: an address that fails too
often (guessing passwords across many accounts) is answered 429 until its window passes. Kept in the
process's memory: each `imex serve` process counts on its own, which bounds guessing per process and
costs no database write on the sign-in path."""

from __future__ import annotations

import threading
import time
from collections import deque


class SigninLimiter:
    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, ip: str, now: float) -> deque[float]:
        times = self._failures.setdefault(ip, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def refusal(self, ip: str) -> str:
        """Why `ip` may not try now ("" when it may)."""
        if self.max_failures <= 0:
            return ""
        now = time.monotonic()
        with self._lock:
            times = self._recent(ip, now)
            if len(times) < self.max_failures:
                if not times:
                    self._failures.pop(ip, None)
                return ""
            wait = int(self.window - (now - times[0])) + 1
        return f"Too many failed sign-ins from your address; try again in {max(wait // 60, 1)} minute(s)."

    def failed(self, ip: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(ip, now).append(now)
            if len(self._failures) > 100_000:  # bound the memory an address sweep can take
                self._failures.pop(next(iter(self._failures)))


_guard = threading.Lock()


def for_portal(portal) -> SigninLimiter:
    """The limiter of one running portal (one per app, so hubs in one process do not share counts)."""
    with _guard:
        limiter = getattr(portal, "_signin_limiter", None)
        if limiter is None:
            limiter = SigninLimiter(
                portal.config["auth.signin_failures_per_ip"], 60.0 * portal.config["auth.signin_window_minutes"]
            )
            portal._signin_limiter = limiter
        return limiter
