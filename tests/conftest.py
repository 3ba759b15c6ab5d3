"""Shared fixtures: a configured hub in this process or as a real `imex serve` subprocess, fresh
PostgreSQL databases when IMEX_TEST_POSTGRES is set, and the peers in peers.py."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

import peers
from hubtools import HubProcess, fast_config
from imex.config import Config
from imex.hub import Hub


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a Config for a test hub: temp data dir, free ports, short timers. Keyword overrides use
    `section__name` (routing__stable_seconds=1)."""
    counter = iter(range(1000))

    def build(rules: list[dict] | None = None, **overrides: object) -> Config:
        return fast_config(tmp_path / f"hub{next(counter)}", rules=rules, **overrides)

    return build


@pytest.fixture
def start_hub() -> Iterator[Callable[[Config], Hub]]:
    """Start hubs in this process; all are stopped at the end of the test."""
    hubs: list[Hub] = []

    def start(config: Config) -> Hub:
        hub = Hub(config)
        hub.start()
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[Callable[..., HubProcess]]:
    """Start `imex serve` subprocesses from a TOML file; all are killed at the end of the test."""
    procs: list[HubProcess] = []

    def start(config_path: Path, name: str = "hub") -> HubProcess:
        proc = HubProcess(config_path, tmp_path / f"{name}.log")
        proc.start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    base = os.environ.get("IMEX_TEST_POSTGRES")
    if not base:
        pytest.skip("IMEX_TEST_POSTGRES is not set")
    url = make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    name = f"imex_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        # a hub fixture torn down after this one may still reconnect between terminate and drop: retry
        for attempt in range(20):
            with admin.connect() as conn:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
                )
                try:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                    break
                except OperationalError:
                    if attempt == 19:
                        raise
            time.sleep(0.25)
        admin.dispose()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., peers.StoreSCP]]:
    """Start dcmtk storescp destinations; all are stopped at the end of the test."""
    if not peers.have_dcmtk():
        pytest.skip("dcmtk is not installed")
    started: list[peers.StoreSCP] = []

    def start(aet: str = "DESTPACS", **kwargs: object) -> peers.StoreSCP:
        scp = peers.StoreSCP(tmp_path / f"scp-{aet}-{len(started)}", aet=aet, **kwargs)  # type: ignore[arg-type]
        scp.start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def browser_page() -> Iterator[object]:
    """A page in Debian's chromium (Playwright cannot download its own browser here); console errors
    and page errors are collected in `page.console_errors`."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.console_errors = errors  # type: ignore[attr-defined]
        yield page
        browser.close()
