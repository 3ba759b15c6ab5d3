"""`imex institution`: hospitals and trusts."""

from __future__ import annotations

import click

from imex import audit
from imex.auth import certificates
from imex.auth.accounts import institution_by_ods
from imex.cli.context import database, load_config, operator
from imex.directory import add_institution, list_institutions, set_local_passwords
from imex.tls import client_certs


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


@institution.command("local-passwords")
@click.argument("ods")
@click.argument("setting", type=click.Choice(["on", "off"]))
@click.pass_context
def institution_local_passwords(ctx: click.Context, ods: str, setting: str) -> None:
    """Let the institution's users sign in with imex passwords (on, the default) or not (off: only through
    its identity provider, see README "Single sign-on"), e.g. `imex institution local-passwords RJZ off`."""
    with database(ctx).sessions() as s:
        inst = set_local_passwords(s, ods, setting == "on")
        audit.record(
            s,
            "institution.change",
            username=operator(),
            institution_id=inst.id,
            object_type="institution",
            object_id=inst.ods_code,
            detail=f"local passwords {setting}",
        )
        s.commit()
    click.echo(f"{inst.ods_code}: imex passwords {'allowed' if setting == 'on' else 'refused (single sign-on only)'}")


@institution.command("require-certificate")
@click.argument("ods")
@click.argument("setting", type=click.Choice(["on", "off"]))
@click.pass_context
def institution_require_certificate(ctx: click.Context, ods: str, setting: str) -> None:
    """Require the institution's users to sign in with their client certificate (smart card): a password
    alone is then refused (on), or not (off, the default), e.g. `imex institution require-certificate RJZ on`."""
    offered = client_certs.requested(load_config(ctx))
    with database(ctx).sessions() as s:
        inst = institution_by_ods(s, ods)
        change = certificates.set_required(inst, setting == "on", offered=offered)
        audit.record(
            s,
            "institution.change",
            username=operator(),
            institution_id=inst.id,
            object_type="institution",
            object_id=inst.ods_code,
            detail=change,
        )
        s.commit()
    click.echo(f"{inst.ods_code}: {change}")
