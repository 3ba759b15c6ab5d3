"""What `imex serve` runs for the locator: the hub indexer, the sweep scheduler (each sweep in its own
thread) and the view cache's expiry."""

from __future__ import annotations

from collections.abc import Callable

from imex.config import Config
from imex.db import Database
from imex.locator import cache, hub_index
from imex.locator.sweep import Sweeper
from imex.store import BlobStore


class LocatorService:
    def __init__(self, config: Config, db: Database, store: BlobStore) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.sweeper = Sweeper(db, config)

    def _index(self) -> None:
        while hub_index.run_once(self.db, store=self.store) >= 200:  # a backlog: keep going until it is drained
            pass

    def _cache(self) -> None:
        cache.run_once(self.db, self.store, float(self.config["locator.view_retention_hours"]))

    def start(self, spawn: Callable[..., None], loop: Callable[..., None]) -> None:
        spawn("locator-index", loop, "locator index", self._index, self.config["locator.index_interval"])
        spawn("locator-sweeps", loop, "locator sweeps", self.sweeper.tick, self.config["locator.sweep_scan_interval"])
        spawn("locator-cache", loop, "locator view cache", self._cache, self.config["retention.scan_interval"])

    def stop(self) -> None:
        self.sweeper.shutdown()
