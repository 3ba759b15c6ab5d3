"""Tables for uploads (declared on the shared Base; imported at the end of imex.db.models so that the
metadata, the migrations test and the Core tables see them)."""
from __future__ import annotations

from imex.db.models import Base  # noqa: F401
