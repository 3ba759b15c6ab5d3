"""`imex harmonise`: header harmonisation."""

from __future__ import annotations

import getpass

import click

from imex.auth.accounts import institution_by_ods
from imex.cli.context import database, load_config, timestamp
from imex.config import ConfigError
from imex.harmonise.prepare import Harmoniser
from imex.routing.preview import PreviewError, preview, render
from imex.routing.reconcile import pending_reconciliations, reconcile
from imex.store import BlobStore


@click.group()
def harmonise() -> None:
    """Header harmonisation: rule checks, dry runs, transfers held for reconciliation."""


def _harmoniser(ctx: click.Context) -> Harmoniser:
    try:
        return Harmoniser.from_config(load_config(ctx))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@harmonise.command("check")
@click.pass_context
def harmonise_check(ctx: click.Context) -> None:
    """Check the [[harmonise]] rules of imex.toml as `imex serve` would at start-up."""
    rules = _harmoniser(ctx).rules
    for rule in rules:
        click.echo(f"line {rule.line or '?'}: {rule.name}")
    click.echo(f"{len(rules)} harmonisation rule(s): ok")


@harmonise.command("preview")
@click.argument("study_uid")
@click.option("--to", "target", required=True, help="Destination ODS code or node name.")
@click.pass_context
def harmonise_preview(ctx: click.Context, study_uid: str, target: str) -> None:
    """Print the attributes that would change, old and new, if STUDY_UID were sent to --to now."""
    config = load_config(ctx)
    harmoniser = _harmoniser(ctx)
    try:
        results = preview(database(ctx), BlobStore(config.store_path, fsync=False), harmoniser, study_uid, target)
    except PreviewError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render(results))


@harmonise.command("held")
@click.option("--institution", "ods", help="Only transfers this institution (ODS code) sends or receives.")
@click.pass_context
def harmonise_held(ctx: click.Context, ods: str | None) -> None:
    """Transfers held for reconciliation, oldest first."""
    db = database(ctx)
    institution_id = None
    if ods:
        with db.session() as s:
            institution_id = institution_by_ods(s, ods).id
    with db.engine.connect() as conn:
        rows = pending_reconciliations(conn, institution_id)
    if not rows:
        click.echo("no transfers are held for reconciliation")
    for r in rows:
        click.echo(
            f"transfer {r.transfer_id}: {r.source_ods} -> {r.destination_node} ({r.destination_ods})  "
            f"{r.study_date} {r.modalities} {r.description!r} accession {r.accession_number!r}  "
            f"held {timestamp(r.held_at)}\n    {r.reason}"
        )


@harmonise.command("reconcile")
@click.argument("transfer_id", type=int)
@click.option("--patient-id", required=True, help="Patient ID to send with (an NHS number, or the destination's ID).")
@click.option("--accession", help="Accession number to send with (default: as the rules make it).")
@click.option(
    "--issuer", help="Issuer of the patient ID (default: NHS for an NHS number, else the destination's ODS code)."
)
@click.option(
    "--actor",
    default=getpass.getuser,
    show_default="the current user",
    help="Who reconciled it, for the transfer's history.",
)
@click.pass_context
def harmonise_reconcile(
    ctx: click.Context, transfer_id: int, patient_id: str, accession: str | None, issuer: str | None, actor: str
) -> None:
    """Release a held transfer with the patient ID (and accession number) to send it with."""
    reconcile(database(ctx), transfer_id, patient_id, accession, actor, issuer=issuer)
    click.echo(f"transfer {transfer_id}: reconciled by {actor}; queued to send")
