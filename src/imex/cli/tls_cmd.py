"""`imex tls`: the deployment's certificate authority."""

from __future__ import annotations

import datetime as dt

import click

from imex import audit
from imex.cli.context import database, load_config, operator
from imex.directory import find_node, require_tls
from imex.tls.ca import CaError, CertificateAuthority
from imex.tls.files import TlsFiles


@click.group()
def tls() -> None:
    """Certificates for DICOM over TLS, MLLP over TLS and HTTPS: a small CA for this deployment."""


def _ca(ctx: click.Context) -> CertificateAuthority:
    return CertificateAuthority(TlsFiles.of(load_config(ctx)).ca_dir)


def _audit(ctx: click.Context, action: str, name: str, detail: str) -> None:
    with database(ctx).engine.begin() as conn:
        audit.record(conn, action, username=operator(), object_type="certificate", object_id=name, detail=detail)


@tls.command("init")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Name or address nodes use to reach the hub (repeat for several); it goes into the hub's certificate.",
)
@click.option("--org", default="imex", show_default=True, help="Organisation named in the CA certificate.")
@click.pass_context
def tls_init(ctx: click.Context, hosts: tuple[str, ...], org: str) -> None:
    """Create the CA and the hub's own certificate."""
    ca = _ca(ctx)
    try:
        issued = ca.init(list(hosts) or ["localhost"], organisation=org)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    _audit(ctx, "tls.init", issued.name, f"CA created; hub certificate for {', '.join(issued.hosts)}")
    click.echo(f"CA certificate: {ca.ca_cert_path} (give it to every node)")
    click.echo(f"CA key: {ca.ca_key_path} (keep it here; back it up offline)")
    click.echo(f"hub certificate: {ca.cert_path(issued.name)}, expires {issued.not_after[:10]}")


@tls.command("issue")
@click.argument("name")
@click.option(
    "--host", "hosts", multiple=True, help="Name or address in the certificate (default: the registered node's host)."
)
@click.option("--days", default=397, show_default=True, type=click.IntRange(1, 3650), help="Validity.")
@click.option(
    "--email",
    "emails",
    multiple=True,
    help="E-mail address in the certificate (a person's, for certificate sign-in to the portal; repeatable).",
)
@click.pass_context
def tls_issue(ctx: click.Context, name: str, hosts: tuple[str, ...], days: int, emails: tuple[str, ...]) -> None:
    """Issue a key and certificate to node NAME (or renew "hub", or a person's with --email); an earlier
    one of NAME is revoked."""
    names = list(hosts)
    if not names and not emails:
        node = find_node(database(ctx), name)
        names = [node.host] if node is not None else []
    ca = _ca(ctx)
    try:
        issued = ca.issue(name, names, days=days, emails=emails)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    _audit(ctx, "tls.issue", name, f"serial {issued.serial:x}, expires {issued.not_after[:10]}")
    click.echo(f"certificate: {ca.cert_path(name)}")
    click.echo(f"private key: {ca.key_path(name)} (give it to the node only, then delete it here)")
    click.echo(f"CA certificate: {ca.ca_cert_path}")
    click.echo(f"expires {issued.not_after[:10]}; SHA-256 fingerprint {issued.fingerprint}")


@tls.command("revoke")
@click.argument("name")
@click.pass_context
def tls_revoke(ctx: click.Context, name: str) -> None:
    """Revoke NAME's certificate: the hub refuses it from the next connection on."""
    try:
        revoked = _ca(ctx).revoke(name)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    for row in revoked:
        _audit(ctx, "tls.revoke", name, f"serial {row.serial:x}")
        click.echo(f"revoked {name} (serial {row.serial:x})")


@tls.command("list")
@click.pass_context
def tls_list(ctx: click.Context) -> None:
    """Certificates issued, with expiry; expiring ones are marked."""
    config = load_config(ctx)
    now = dt.datetime.now(dt.UTC)
    rows = _ca(ctx).certificates()
    if not rows:
        click.echo("no certificates issued: create the CA with `imex tls init`")
    for row in rows:
        left = (row.expires - now).days
        state = (
            "revoked " + row.revoked_at[:10]
            if row.revoked_at
            else "EXPIRED"
            if left < 0
            else f"EXPIRING in {left} days"
            if left <= config["tls.expiry_warning_days"]
            else "valid"
        )
        click.echo(f"{row.name:24} expires {row.not_after[:10]}  {state:24} serial {row.serial:x}")


@tls.command("crl")
@click.pass_context
def tls_crl(ctx: click.Context) -> None:
    """Re-sign the certificate revocation list (the hub also does it before it lapses)."""
    try:
        click.echo(f"wrote {_ca(ctx).write_crl()}")
    except CaError as exc:
        raise click.ClickException(str(exc)) from None


@tls.command("require")
@click.argument("node_name")
@click.option("--off", is_flag=True, help="Allow plain TCP again.")
@click.pass_context
def tls_require(ctx: click.Context, node_name: str, off: bool) -> None:
    """Make NODE_NAME use DICOM over TLS only: it must call the TLS port with its certificate, and the hub
    sends to it over TLS."""
    require_tls(database(ctx), node_name, required=not off)
    _audit(ctx, "tls.require", node_name, "plain TCP allowed" if off else "TLS required")
    click.echo(f"node {node_name}: {'plain TCP allowed' if off else 'DICOM over TLS only'}")
