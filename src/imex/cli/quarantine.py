"""`imex quarantine`: studies that matched no destination."""

from __future__ import annotations

import click
from sqlalchemy import select

from imex.cli.context import database, timestamp
from imex.db.models import Institution, Study
from imex.routing.router import route_manually


@click.group()
def quarantine() -> None:
    """Studies that matched no destination, with the reason."""


@quarantine.command("list")
@click.pass_context
def quarantine_list(ctx: click.Context) -> None:
    with database(ctx).session() as s:
        rows = s.execute(
            select(Study, Institution)
            .join(Institution, Institution.id == Study.institution_id)
            .where(Study.route_state == "quarantined")
            .order_by(Study.last_received_at)
        ).all()
        if not rows:
            click.echo("quarantine is empty")
        for st, inst in rows:
            click.echo(
                f"{st.study_uid}  from {inst.ods_code}  {st.study_date} {st.modalities} "
                f"{st.num_instances} instances  received {timestamp(st.last_received_at)}\n    reason: "
                f"{st.quarantine_reason}"
            )


@quarantine.command("route")
@click.argument("study_uid")
@click.option("--to", "targets", multiple=True, required=True, help="ODS code or node name (repeatable).")
@click.pass_context
def quarantine_route(ctx: click.Context, study_uid: str, targets: tuple[str, ...]) -> None:
    """Send a quarantined study to the destinations given."""
    try:
        ids = route_manually(database(ctx), study_uid, list(targets))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued transfer(s) {', '.join(map(str, ids)) or '(none: already delivered)'}")
