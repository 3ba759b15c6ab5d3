"""`imex scim`: tokens for the SCIM directories of `[[scim]]` (see README "Provisioning with SCIM")."""

from __future__ import annotations

import click

from imex.auth.scim.directories import new_token, token_sha256


@click.group("scim")
def scim() -> None:
    """SCIM provisioning: tokens for hospital directories."""


@scim.command("token")
@click.argument("name")
def scim_token(name: str) -> None:
    """Print a new random token for the directory NAME and the token_sha256 line for its [[scim]] table.

    The token is shown once: give it to the directory (its SCIM "secret token") over a channel you trust.
    imex.toml keeps only its SHA-256, so a copy of the file does not let anyone provision users."""
    token = new_token()
    click.echo(f"Token for the directory {name!r} (shown once; give it to the directory as its bearer token):")
    click.echo(f"  {token}")
    click.echo(f"In imex.toml, in the [[scim]] table with name = {name!r}:")
    click.echo(f'  token_sha256 = "{token_sha256(token)}"')
