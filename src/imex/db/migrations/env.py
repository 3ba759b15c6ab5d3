"""Alembic environment: imex passes its own connection in (see Database.migrate)."""

from alembic import context

from imex.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
context.run_migrations()
