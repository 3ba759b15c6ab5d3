"""`imex user`: portal users."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import accounts, certificates
from imex.cli.context import database, load_config, operator
from imex.db.models import Institution, User


def _audit(session: Session, action: str, username: str, detail: str = "") -> None:
    audit.record(session, action, username=operator(), object_type="user", object_id=username, detail=detail)


@click.group()
def user() -> None:
    """Portal users: add, reset, disable, grant roles."""


@user.command("add")
@click.argument("username")
@click.option("--institution", "ods", required=True, help="ODS code of the user's institution.")
@click.option("--name", "full_name", default="", help="Full name.")
@click.option("--email", default="", help="E-mail address for notifications.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="Role to grant (repeatable): system_admin, "
    "institution_admin, sender, viewer, pacs_guardian, auditor or one of the institution's own.",
)
@click.option("--admin", is_flag=True, help="Make this user a system admin (the hub's first admin).")
@click.option("--password", help="Initial password (default: ask; the user must change it at first sign-in).")
@click.option(
    "--certificate-subject",
    help="Subject (RFC 4514) or e-mail address of the client certificate (smart card) they sign in with.",
)
@click.pass_context
def user_add(
    ctx: click.Context,
    username: str,
    ods: str,
    full_name: str,
    email: str,
    roles: tuple[str, ...],
    admin: bool,
    password: str | None,
    certificate_subject: str | None,
) -> None:
    """Add a portal user, e.g. `imex user add jsmith --institution RJZ --role sender`."""
    if password is None:
        password = click.prompt("Initial password", hide_input=True, confirmation_prompt=True)
    wanted = list(dict.fromkeys([*roles, *(["system_admin"] if admin else [])]))
    policy = accounts.LoginPolicy.from_config(load_config(ctx))
    with database(ctx).sessions() as s:
        added = accounts.add_user(
            s,
            username=username,
            institution=accounts.institution_by_ods(s, ods.upper()),
            password=password,
            full_name=full_name,
            email=email,
            roles=wanted,
            policy=policy,
            must_change_password=True,
        )
        _audit(s, "user.add", added.username, f"roles: {', '.join(wanted) or 'none'}")
        if certificate_subject:
            certificates.set_subject(s, added, certificate_subject, username=operator())
        s.commit()
    click.echo(
        f"added {username} at {ods.upper()} with roles {', '.join(wanted) or '(none)'}; "
        "they choose a new password at first sign-in"
    )


@user.command("list")
@click.option("--institution", "ods", help="Only this institution's users.")
@click.pass_context
def user_list(ctx: click.Context, ods: str | None) -> None:
    """List users with their roles and state."""
    with database(ctx).sessions() as s:
        query = select(User, Institution.ods_code).join(Institution, Institution.id == User.institution_id)
        if ods:
            query = query.where(Institution.ods_code == ods.upper())
        rows = s.execute(query.order_by(Institution.ods_code, User.username)).all()
        if not rows:
            click.echo("no users; add the first admin with `imex user add NAME --institution ODS --admin`")
        for u, inst in rows:
            state = "disabled" if u.disabled else "active"
            click.echo(
                f"{u.username:20} {inst:8} {state:9} {'2FA' if u.totp_enabled else '   '} "
                f"{', '.join(accounts.role_names(s, u.id)) or '(no roles)'}"
            )


@user.command("reset")
@click.argument("username")
@click.option("--remove-second-factor", is_flag=True, help="Also remove their authenticator (lost phone).")
@click.pass_context
def user_reset(ctx: click.Context, username: str, remove_second_factor: bool) -> None:
    """Give a user a one-time password (printed), unlock them and end their sessions."""
    with database(ctx).sessions() as s:
        temporary = accounts.reset_user(
            s, accounts.user_by_name(s, username), remove_second_factor=remove_second_factor, username=operator()
        )
        s.commit()
    click.echo(f"one-time password for {username}: {temporary}\n(they must choose a new one at sign-in)")


@user.command("disable")
@click.argument("username")
@click.pass_context
def user_disable(ctx: click.Context, username: str) -> None:
    """Disable a user and end their sessions (the audit trail keeps their history)."""
    with database(ctx).sessions() as s:
        accounts.disable_user(s, accounts.user_by_name(s, username), username=operator())
        s.commit()
    click.echo(f"disabled {username}")


@user.command("enable")
@click.argument("username")
@click.pass_context
def user_enable(ctx: click.Context, username: str) -> None:
    """Enable a disabled user."""
    with database(ctx).sessions() as s:
        accounts.enable_user(s, accounts.user_by_name(s, username), username=operator())
        s.commit()
    click.echo(f"enabled {username}")


@user.command("certificate")
@click.argument("username")
@click.argument("subject", required=False)
@click.option("--certificate-subject", "option_subject", help="The same as SUBJECT.")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the subject from the user's certificate file (PEM or DER).",
)
@click.option("--clear", is_flag=True, help="Remove the user's certificate: they can no longer sign in with it.")
@click.pass_context
def user_certificate(
    ctx: click.Context,
    username: str,
    subject: str | None,
    option_subject: str | None,
    from_file: Path | None,
    clear: bool,
) -> None:
    """Register the client certificate (smart card) USERNAME signs in with, by its SUBJECT in RFC 4514
    form (`openssl x509 -noout -subject -nameopt RFC2253 -in CERT`) or an e-mail address in it, e.g.
    `imex user certificate jsmith "CN=Jane Smith,O=Kings,C=GB"`."""
    given = [v for v in (subject, option_subject) if v] + ([from_file] if from_file else [])
    if len(given) + clear != 1:
        raise click.UsageError("give one of SUBJECT, --certificate-subject, --from-file or --clear")
    if from_file is not None:
        subject = certificates.subject_of_file(from_file.read_bytes())
    with database(ctx).sessions() as s:
        found = accounts.user_by_name(s, username)
        stored = certificates.set_subject(s, found, None if clear else subject or option_subject, username=operator())
        s.commit()
    click.echo(f"{username}: signs in with the certificate {stored}" if stored else f"{username}: no certificate")


@user.command("grant")
@click.argument("username")
@click.argument("role")
@click.option("--revoke", is_flag=True, help="Take the role away instead.")
@click.pass_context
def user_grant(ctx: click.Context, username: str, role: str, revoke: bool) -> None:
    """Grant a role to a user (or take it away with --revoke)."""
    with database(ctx).sessions() as s:
        found = accounts.user_by_name(s, username)
        (accounts.revoke_role if revoke else accounts.grant_role)(s, found, role)
        _audit(s, "role.revoke" if revoke else "role.grant", username, role)
        s.commit()
    click.echo(f"{'took' if revoke else 'granted'} {role} {'from' if revoke else 'to'} {username}")
