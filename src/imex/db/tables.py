"""The Core `Table` objects of the models, for the hot paths that use SQL expressions rather than the ORM."""
from __future__ import annotations

from sqlalchemy import Table

from imex.db.models import (
    Email,
    Instance,
    Institution,
    Node,
    Patient,
    Series,
    Study,
    Transfer,
    TransferEvent,
    TransferItem,
)


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


institutions = _table(Institution)
nodes = _table(Node)
patients = _table(Patient)
studies = _table(Study)
series = _table(Series)
instances = _table(Instance)
transfers = _table(Transfer)
items = _table(TransferItem)
events = _table(TransferEvent)
emails = _table(Email)
