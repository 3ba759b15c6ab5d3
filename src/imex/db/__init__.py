"""Database: models, engine and migrations."""

from imex.db.models import utcnow
from imex.db.session import Database

__all__ = ["Database", "utcnow"]
