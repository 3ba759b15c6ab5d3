"""`imex institution`: hospitals and trusts."""

from __future__ import annotations

import click

from imex.cli.context import database
from imex.directory import add_institution, list_institutions


@click.group()
def institution() -> None:
    """Hospitals and trusts, by ODS code."""


@institution.command("add")
@click.argument("ods")
@click.argument("name")
@click.option("--alias", help="Called AE title that routes studies to this institution (default: the ODS code).")
@click.option("--email", help="Contact e-mail for alerts.")
@click.pass_context
def institution_add(ctx: click.Context, ods: str, name: str, alias: str | None, email: str | None) -> None:
    """Add an institution, e.g. `imex institution add RJZ "King's College Hospital"`."""
    inst = add_institution(database(ctx), ods, name, alias=alias, contact_email=email)
    click.echo(f"added institution {inst.ods_code} ({inst.name}); alias {inst.alias}")


@institution.command("list")
@click.pass_context
def institution_list(ctx: click.Context) -> None:
    rows = list_institutions(database(ctx))
    click.echo(f"{'ODS':<8} {'ALIAS':<16} {'CONTACT':<30} NAME")
    for inst in rows:
        click.echo(f"{inst.ods_code:<8} {inst.alias or '':<16} {inst.contact_email or '':<30} {inst.name}")
