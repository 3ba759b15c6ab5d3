"""`imex retention`: expired studies."""

from __future__ import annotations

import click
from sqlalchemy import select

from imex.cli.context import database, load_config
from imex.db.models import Tombstone
from imex.index.remove import orphans
from imex.retention.job import run_once
from imex.store import BlobStore


@click.group()
def retention() -> None:
    """Expired studies: delete them now, see what was deleted, find stray files."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--batch", default=500, show_default=True, help="Most studies to delete.")
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool, batch: int) -> None:
    """Run one retention pass now (the hub runs one every retention.scan_interval)."""
    config = load_config(ctx)
    result = run_once(
        database(ctx), BlobStore(config.store_path, fsync=config["store.fsync"]), batch=batch, dry_run=dry_run
    )
    if dry_run:
        click.echo("\n".join(result.candidates) or "nothing has expired")
        return
    for d in result.deleted:
        click.echo(f"deleted {d.study_uid}: {d.instances} instances, {d.bytes} bytes")
    if not result.deleted:
        click.echo("nothing has expired")


@retention.command("tombstones")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def retention_tombstones(ctx: click.Context, limit: int) -> None:
    """Deleted studies, newest first: what, when and why."""
    with database(ctx).session() as s:
        rows = s.scalars(select(Tombstone).order_by(Tombstone.id.desc()).limit(limit)).all()
        if not rows:
            click.echo("no study has been deleted")
        for t in rows:
            click.echo(
                f"{t.deleted_at:%Y-%m-%d %H:%M}  {t.study_uid}  {t.study_date} {t.modalities} "
                f"{t.instances} instances\n    {t.reason}"
            )


@retention.command("orphans")
@click.option("--delete", is_flag=True, help="Delete them (files older than an hour that no instance uses).")
@click.pass_context
def retention_orphans(ctx: click.Context, delete: bool) -> None:
    """Blob files no instance refers to (left by a crash between a deletion and its file removal)."""
    config = load_config(ctx)
    store = BlobStore(config.store_path, fsync=config["store.fsync"])
    found = list(orphans(database(ctx), store))
    for key in found:
        click.echo(key)
        if delete:
            store.delete(key)
    click.echo(f"{len(found)} orphan blob(s){' deleted' if delete and found else ''}")
