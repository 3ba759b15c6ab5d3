"""`imex send`: push DICOM files to the hub."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import click

from imex.cli.context import load_config
from imex.dicom.push import PushReport, collect, push


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "destination", required=True, help="Destination ODS code (or any alias the hub answers to).")
@click.option("--hub", help="HOST[:PORT] of the hub (default: send.hub and dicom.port settings).")
@click.option("--aet", help="Calling AE title (default: the send.calling_aet setting); must be a registered node.")
@click.pass_context
def send(ctx: click.Context, paths: tuple[Path, ...], destination: str, hub: str | None, aet: str | None) -> None:
    """Push files, folders, zips or a CD (DICOMDIR) to the hub for a destination."""
    config = load_config(ctx)
    host, port = config["send.hub"], config["dicom.port"]
    if hub:
        host, _, raw_port = hub.rpartition(":") if ":" in hub else (hub, "", "")
        try:
            port = int(raw_port) if raw_port else port
        except ValueError:
            raise click.BadParameter(f"{hub!r} is not HOST or HOST:PORT", param_hint="--hub") from None
        host = host or config["send.hub"]
    called = destination.strip().upper()
    report = PushReport()
    with ExitStack() as scratch:
        files = collect(paths, scratch, report)
        if not files:
            raise click.ClickException("no DICOM files found in " + ", ".join(map(str, paths)))
        with click.progressbar(
            length=len(files), label=f"sending {len(files)} instances to {called}", file=sys.stderr
        ) as bar:
            push(
                files,
                host=host,
                port=port,
                called_aet=called,
                calling_aet=aet or config["send.calling_aet"],
                report=report,
                progress=bar.update,
            )
    for path, why in report.skipped[:20]:
        click.echo(f"skipped {path}: {why}", err=True)
    for path, why in report.failed[:20]:
        click.echo(f"failed  {path}: {why}", err=True)
    click.echo(f"sent {report.sent}, failed {len(report.failed)}, skipped {len(report.skipped)}")
    if report.failed:
        sys.exit(1)
