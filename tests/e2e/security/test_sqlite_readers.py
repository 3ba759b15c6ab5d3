"""On SQLite, reading does not wait for the write lock: while another connection holds it (BEGIN
IMMEDIATE, kept), a C-ECHO is answered (the node cache is loaded during association negotiation),
/healthz answers, and portal GETs (pages and API, signed in by cookie or token) answer 200."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest

import peers
from hubtools import register_hospitals
from portaltools import add_user, base_url, bearer, browser

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")


def test_readers_are_served_while_another_connection_holds_the_write_lock(make_config, start_hub):
    hub = start_hub(make_config())
    assert hub.db.is_sqlite
    register_hospitals(hub, dest_port=11112)
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    pages = browser(hub, "kings_admin")
    api = bearer(hub, "kings_admin")
    locker = sqlite3.connect(hub.db.url.split("///", 1)[1], isolation_level=None, timeout=1)
    locker.execute("BEGIN IMMEDIATE")  # the write lock, held until the end of the test
    try:
        hub.nodes.invalidate()  # the next association reads the nodes from the database
        echo = peers.echoscu(hub.listener.port, "IMEX", "STORESCU", timeout=20)
        assert echo.returncode == 0, echo.stdout + echo.stderr
        health = httpx.get(f"{base_url(hub)}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["checks"]["database"] == "ok", health.text
        for path in ("/", "/worklist"):
            answer = pages.get(path, timeout=10)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        for path in ("/api/v1/transfers", "/api/v1/quarantine"):
            answer = api.get(path, timeout=10)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        pages.close()
        api.close()


def test_a_read_session_that_writes_waits_its_turn_for_the_lock(tmp_path):
    """A read_sessions session reads under the held lock; its first write waits for the lock (instead of
    failing at once with "database is locked", as upgrading a read transaction does) and then succeeds."""
    from sqlalchemy import text

    from imex.db import Database

    path = tmp_path / "readers.db"
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
    locker = sqlite3.connect(path, isolation_level=None, timeout=1)
    locker.execute("BEGIN IMMEDIATE")
    outcome: list[object] = []
    read = threading.Event()

    def work() -> None:
        try:
            with db.read_sessions() as s:
                outcome.append(s.execute(text("SELECT count(*) FROM t")).scalar())
                read.set()
                s.execute(text("INSERT INTO t VALUES (2)"))
                s.commit()
                outcome.append("written")
        except Exception as exc:
            outcome.append(exc)
            read.set()

    worker = threading.Thread(target=work)
    try:
        worker.start()
        assert read.wait(20), "a read waited for the write lock"
        time.sleep(0.5)  # let the write reach the lock
        locker.execute("INSERT INTO t VALUES (1)")
    finally:
        locker.execute("COMMIT")
        locker.close()
    worker.join(30)
    assert outcome == [0, "written"], outcome
    with db.reader() as conn:
        assert sorted(conn.execute(text("SELECT v FROM t")).scalars()) == [1, 2]
    db.dispose()
