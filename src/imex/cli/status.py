"""`imex status`: the counts an operator looks at first."""

from __future__ import annotations

import click
from sqlalchemy import func, select

from imex.cli.context import database
from imex.db.models import Study, Transfer


@click.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Counts of studies and transfers by state."""
    with database(ctx).session() as s:
        for label, col in (("studies", Study.route_state), ("transfers", Transfer.state)):
            counts = s.execute(select(col, func.count()).group_by(col)).all()
            click.echo(f"{label}: " + (", ".join(f"{k} {v}" for k, v in counts) or "none"))
