"""The `imex` command line: run the hub, manage institutions and nodes, watch and steer the queue.

One module per command group; what the commands share (the settings, the database, the operator's name, the
exit code of each kind of domain error) is in `context`. `main` names each group's module in COMMANDS and
imports it only when that group runs (or for `--help`): between them the modules import pydicom, argon2 and
the hub's web stack, which would double the start-up time of every command if all were imported up front."""

from __future__ import annotations

import importlib
from typing import Any

import click

from imex.cli.context import refuse
from imex.errors import DomainError

# command name -> "module:attribute" of its click group or command; a new group adds a line here
COMMANDS = {
    "config": "imex.cli.config_cmd:config_group",
    "export": "imex.cli.export_cmd:export_study",
    "folder": "imex.cli.folders_cmd:folder",
    "harmonise": "imex.cli.harmonise_cmd:harmonise",
    "hl7": "imex.cli.hl7_cmd:hl7",
    "institution": "imex.cli.institutions:institution",
    "jobs": "imex.cli.jobs_cmd:jobs",
    "locator": "imex.cli.locator_cmd:locator",
    "node": "imex.cli.nodes:node",
    "quarantine": "imex.cli.quarantine:quarantine",
    "retention": "imex.cli.retention_cmd:retention",
    "scim": "imex.cli.scim_cmd:scim",
    "send": "imex.cli.send:send",
    "serve": "imex.cli.serve:serve",
    "status": "imex.cli.status:status",
    "tls": "imex.cli.tls_cmd:tls",
    "transfers": "imex.cli.transfers:transfers",
    "user": "imex.cli.users:user",
}


class _Commands(click.Group):
    """A group whose subcommands are imported on first use, from COMMANDS, and whose commands let domain errors
    through: they end here, as a message and the exit code of their kind."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DomainError as exc:
            refuse(exc)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=_Commands)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="IMEX_CONFIG",
    help="imex.toml to read (default: ./imex.toml when present).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """imex: an image exchange hub for hospitals."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
