"""`imex config`: the settings and their reference."""

from __future__ import annotations

from pathlib import Path

import click

from imex import config as config_module
from imex.cli.context import load_config


@click.group("config")
def config_group() -> None:
    """Show the settings and their reference."""


@config_group.command("docs")
@click.option("--write", type=click.Path(dir_okay=False), help="Write to this file instead of printing.")
def config_docs(write: str | None) -> None:
    """Print the settings reference (docs/configuration.md)."""
    text = config_module.settings_markdown()
    if write:
        Path(write).write_text(text)
    else:
        click.echo(text, nl=False)


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings (secrets hidden)."""
    config = load_config(ctx)
    for key, value in config.values.items():
        click.echo(f"{key} = {config_module.display_value(key, value)!r}")
