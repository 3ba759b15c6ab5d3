"""What the portal's routes share: the database, settings, the secret box, the sign-in policy, and the
hub they run in (for the DICOM test button)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Protocol

from imex.auth.accounts import LoginPolicy
from imex.auth.oidc_config import Provider, providers_of
from imex.auth.secrets_box import SecretBox, load_secret
from imex.config import Config
from imex.db import Database
from imex.directory import NodeCache
from imex.index.ingest import Ingest
from imex.index.listener import DicomListener
from imex.store import BlobStore
from imex.store.quota import Quota


class Hub(Protocol):
    """What the web layer uses of the process it runs in (imex.hub.Hub has it all): the web layer reads
    these and never imports the hub, which imports the web layer to serve it."""

    config: Config
    db: Database
    store: BlobStore
    ingest: Ingest
    nodes: NodeCache
    quota: Quota
    listener: DicomListener
    work_queued: threading.Event


@dataclass
class Portal:
    db: Database
    config: Config
    box: SecretBox
    policy: LoginPolicy
    hub: Hub | None = None
    # the [[oidc]] identity providers people may sign in through, by name
    sso: dict[str, Provider] = field(default_factory=dict)

    @classmethod
    def create(cls, db: Database, config: Config, hub: Hub | None = None) -> Portal:
        policy = LoginPolicy.from_config(config)
        box = SecretBox(load_secret(config["auth.secret_key"], config.data_dir))
        return cls(db=db, config=config, box=box, policy=policy, hub=hub, sso=providers_of(config))

    @property
    def session_idle(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.config["http.session_idle_minutes"])

    @property
    def session_max(self) -> dt.timedelta:
        return dt.timedelta(hours=self.config["http.session_max_hours"])
