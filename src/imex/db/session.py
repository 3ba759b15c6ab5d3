"""Engine and sessions for SQLite (embedded default) and PostgreSQL, and migrations on start-up.

SQLite runs in WAL mode and every transaction starts with BEGIN IMMEDIATE: several threads write
(ingest, router, workers), and a deferred transaction that reads and then writes can fail at once with
"database is locked" instead of waiting its turn. Work that only reads must not wait for that lock (a
writer may hold it for a long time) and uses read transactions instead (plain BEGIN, a WAL snapshot):
`reader()` for a connection that only reads, and `read_sessions` for sessions that mostly read (the node
cache, the portal's GET requests). A `read_sessions` session that does write (an audit event, a session
touch) ends its read transaction at its first write and goes on in a BEGIN IMMEDIATE one, waiting its
turn like every writer: its reads before that came from the earlier snapshot, as each statement under
PostgreSQL's READ COMMITTED sees only what was committed when it ran. Work that reads and then writes
what it read (claiming a row, a counter) uses `session()` or `engine.begin()`, which hold the lock
throughout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class Database:
    """One engine per process; `session()` for ORM work, `engine.begin()` for the hot path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=10, max_overflow=20
            )
            _make_sqlite_transactional(self.engine)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # sessions that mostly read: on SQLite a read transaction until their first write (see above)
        self.read_sessions = sessionmaker(self.engine.execution_options(read_first=True), expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def reader(self):
        """A connection for reads only: on SQLite it does not take the write lock."""
        return self.engine.connect().execution_options(readonly=True)

    def migrate(self) -> None:
        """Bring the schema to the newest revision; several processes starting at once take turns."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(7342001)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def _make_sqlite_transactional(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # read-only work (the pollers' "anything to do?") must not take the write lock from ingest
        options = conn.get_execution_options()
        if options.get("read_first"):
            conn.info[_READ_TRANSACTION] = True
            conn.exec_driver_sql("BEGIN")
            return
        conn.info.pop(_READ_TRANSACTION, None)
        conn.exec_driver_sql("BEGIN" if options.get("readonly") else "BEGIN IMMEDIATE")

    @event.listens_for(engine, "before_cursor_execute")
    def _before_execute(conn, _cursor, statement: str, _parameters: Any, context: Any, _many: bool) -> None:
        # the first write of a read_first transaction: end its snapshot and wait for the write lock, rather
        # than upgrade the read transaction (which fails at once with "database is locked" when another
        # connection writes, as SQLite does not wait there)
        if not conn.info.get(_READ_TRANSACTION) or not _writes(statement, context):
            return
        conn.info.pop(_READ_TRANSACTION, None)
        if conn.in_nested_transaction():
            return  # a savepoint would not survive the COMMIT: let SQLite upgrade the transaction itself
        dbapi_conn = conn.connection.dbapi_connection
        dbapi_conn.execute("COMMIT")
        dbapi_conn.execute("BEGIN IMMEDIATE")

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn) -> None:
        conn.info.pop(_READ_TRANSACTION, None)


_READ_TRANSACTION = "imex_read_transaction"
_WRITE_WORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER"})
_WRITE_IN_CTE = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def _writes(statement: str, context: Any) -> bool:
    """Whether a statement changes the database (DML and DDL; a WITH ... INSERT too)."""
    if context is not None and (
        getattr(context, "isinsert", False)
        or getattr(context, "isupdate", False)
        or getattr(context, "isdelete", False)
    ):
        return True
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    first = words[0].upper() if words else ""
    if first == "WITH":
        return _WRITE_IN_CTE.search(statement) is not None
    return first in _WRITE_WORDS
