"""`imex export`: a study as a file-set (DICOMDIR)."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import select

from imex import audit
from imex.cli.context import database, load_config, operator
from imex.db.models import Study
from imex.errors import NotFound
from imex.export import study_members, write_folder, write_zip
from imex.store import BlobStore


@click.command("export")
@click.argument("study_uid")
@click.argument("target", type=click.Path(path_type=Path))
@click.pass_context
def export_study(ctx: click.Context, study_uid: str, target: Path) -> None:
    """Write the study STUDY_UID with a DICOMDIR to TARGET: a zip when it ends in .zip, else a folder.
    The instances are written exactly as stored; the export is audited."""
    config = load_config(ctx)
    store = BlobStore(config.store_path, fsync=False)
    with database(ctx).session() as s:
        study = s.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise NotFound(f"no study {study_uid} in the index")
        members = study_members(s, store, study.id)
        if not members:
            raise click.ClickException(f"study {study_uid} has no stored instances")
        if target.suffix.lower() == ".zip":
            count = write_zip(members, target)
        else:
            if target.exists() and any(target.iterdir()):
                raise click.ClickException(f"{target} is not empty; give an empty or new folder, or a .zip")
            count = write_folder(members, target)
        audit.record(
            s,
            "study.export",
            username=operator(),
            study_uid=study_uid,
            object_type="study",
            object_id=study.id,
            detail=f"{count} instances with DICOMDIR to {target}",
        )
    click.echo(f"wrote {count} instances and a DICOMDIR to {target}")
