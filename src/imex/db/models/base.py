"""What every model module shares: the declarative Base (one metadata for the whole schema, so that Alembic
and create_all see every table), the clock every timestamp column uses, and the typed way to name a model's
Core table.

Times are naive UTC (`utcnow()`), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Table
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> dt.datetime:
    """Naive UTC now: what every timestamp column holds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """The one declarative base: every model registers its table on `Base.metadata`."""


def core_table(model: type[Base]) -> Table:
    """The Core `Table` of a model, for the hot paths that use SQL expressions rather than the ORM.

    `Model.__table__` is typed as a FromClause; every model here maps one plain table, so this checks it
    once and hands back a `Table`."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a plain table")
    return table
