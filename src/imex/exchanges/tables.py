"""Core tables of the exchange models, for the SQL-expression code paths."""
from __future__ import annotations

from sqlalchemy import Table

from imex.db.models_exchange import (ExchangeTransaction, ImageRequest, Retrieval, TransactionAttachment,
                                     TransactionMessage, TransactionStudy)


def _table(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


transactions = _table(ExchangeTransaction)
transaction_studies = _table(TransactionStudy)
transaction_messages = _table(TransactionMessage)
transaction_attachments = _table(TransactionAttachment)
retrievals = _table(Retrieval)
image_requests = _table(ImageRequest)
