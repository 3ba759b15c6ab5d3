"""`imex folder`: sharing folders."""

from __future__ import annotations

import click
from sqlalchemy import func, select

from imex.cli.context import database
from imex.db.models import Folder, FolderInstitution, FolderStudy, Institution, utcnow
from imex.folders.manage import add_folder


@click.group()
def folder() -> None:
    """Sharing folders: emergency (every participating institution) and elective (members only)."""


@folder.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["emergency", "elective"]), required=True)
@click.option("--alias", help="Called AE title that files studies sent to it into the folder.")
@click.option("--hours", type=int, help="Hours a study stays (default 18 emergency, 192 elective).")
@click.option("--institution", "institutions", multiple=True, help="ODS code of a participating institution.")
@click.option("--owner", help="ODS code of the institution whose admins manage an elective folder.")
@click.pass_context
def folder_add(
    ctx: click.Context,
    name: str,
    kind: str,
    alias: str | None,
    hours: int | None,
    institutions: tuple[str, ...],
    owner: str | None,
) -> None:
    """Create a folder, e.g. `imex folder add Emergency --kind emergency --alias EMERGENCY --institution RJZ`."""
    add_folder(
        database(ctx), name, kind, alias=alias, hours=hours, institutions_ods=list(institutions), owner_ods=owner
    )
    click.echo(f"added {kind} folder {name}" + (f"; PACS send to AE title {alias.upper()}" if alias else ""))


@folder.command("list")
@click.pass_context
def folder_list(ctx: click.Context) -> None:
    """Folders with their institutions and the studies in them now."""
    with database(ctx).session() as s:
        found = s.scalars(select(Folder).order_by(Folder.name)).all()
        if not found:
            click.echo("no folders; add one with `imex folder add`")
        for f in found:
            ods = s.scalars(
                select(Institution.ods_code)
                .join(FolderInstitution, FolderInstitution.institution_id == Institution.id)
                .where(FolderInstitution.folder_id == f.id)
            )
            count = s.scalar(
                select(func.count())
                .select_from(FolderStudy)
                .where(FolderStudy.folder_id == f.id, FolderStudy.expires_at > utcnow())
            )
            click.echo(
                f"{f.name:24} {f.kind:9} {f.alias or '-':16} {f.retention_hours:5} h  {count:4} studies  "
                f"{', '.join(ods) or '(no institution)'}"
            )
