"""`imex hl7`: HL7 v2 reports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from sqlalchemy import select

from imex.cli.context import database
from imex.db.models import Study
from imex.errors import NotFound
from imex.hl7 import client
from imex.reports.history import reports_for_study


@click.group()
def hl7() -> None:
    """HL7 v2 reports: send a message over MLLP, show a study's reports."""


@hl7.command("send")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to", required=True, metavar="HOST:PORT", help="MLLP listener to send to.")
@click.option("--tls", is_flag=True, help="Use MLLP over TLS.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the ACK.")
def hl7_send(file: Path, to: str, tls: bool, timeout: float) -> None:
    """Send the HL7 message(s) in FILE (segments ending in CR or newlines; several messages each start
    with MSH) and print each ACK."""
    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise click.ClickException(f"--to {to!r} must be HOST:PORT, e.g. 127.0.0.1:2575")
    text = file.read_bytes().replace(b"\x0b", b"").replace(b"\x1c", b"").replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages = [m.strip(b"\r") for m in re.split(rb"\r(?=MSH\|)", b"\r" + text) if m.strip(b"\r")]
    if any(not m.startswith(b"MSH") for m in messages):
        raise click.ClickException(f"{file}: a message must start with an MSH segment")
    if not messages:
        raise click.ClickException(f"{file} holds no HL7 message (none starts with MSH)")
    refused = 0
    for message in messages:
        try:
            answer = client.send(host, int(port), message + b"\r", timeout=timeout, tls=tls)
        except client.MllpError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(answer.raw.replace(b"\r", b"\n").decode("utf-8", errors="replace").rstrip())
        refused += not answer.accepted
    if refused:
        sys.exit(1)


@hl7.command("reports")
@click.argument("study_uid")
@click.pass_context
def hl7_reports(ctx: click.Context, study_uid: str) -> None:
    """The reports of a study, newest version first."""
    with database(ctx).engine.connect() as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == study_uid)).scalar()
        if study_id is None:
            raise NotFound(f"no study {study_uid}")
        found = reports_for_study(conn, study_id)
    if not found:
        click.echo("no report yet")
    for r in found:
        flag = " (superseded)" if r["superseded"] else ""
        click.echo(
            f"report {r['id']}: {r['status']}{flag}, accession {r['accession_number']}, "
            f"{r['observed_at'] or 'time unknown'}, {r['clinician'] or 'clinician unknown'}, "
            f"received {r['received_at']:%Y-%m-%d %H:%M:%S}"
        )
        click.echo("    " + r["text"].replace("\n", "\n    "))
