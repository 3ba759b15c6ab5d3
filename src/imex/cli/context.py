"""What every `imex` command shares: the settings and database of this invocation, the operator's name for
the audit trail, how times are shown, and the exit code of a refused command."""

from __future__ import annotations

import datetime as dt
import getpass
from typing import NoReturn

import click

from imex import config as config_module
from imex.config import Config, ConfigError
from imex.db import Database
from imex.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, kind_of

# The exit code of a command a domain function refused, by the kind of error (imex.errors): `main` ends every
# command that lets a DomainError through with `refuse`, so no command catches one. 1 is also every other
# failure (an unreadable imex.toml, a certificate authority that refuses); 2 is click's own for a wrong option
# or argument.
EXIT_CODES: dict[type[DomainError], int] = {Invalid: 1, NotFound: 3, Conflict: 4, Forbidden: 5}


def refuse(error: DomainError) -> NoReturn:
    """End the command as refused: "Error: <message>" on stderr, and the exit code of the error's kind."""
    click.ClickException(str(error)).show()
    kind = kind_of(error)
    raise click.exceptions.Exit(EXIT_CODES[kind] if kind is not None else 1)


def load_config(ctx: click.Context) -> Config:
    """The settings from `--config`, IMEX_CONFIG or ./imex.toml; a bad file is a clear error, not a traceback."""
    try:
        return config_module.load(ctx.obj.get("config_path"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def database(ctx: click.Context) -> Database:
    """The hub's database, migrated to the newest schema; opened once per invocation."""
    if "db" not in ctx.obj:
        # what imex.hub.open_database does, without importing the hub (FastAPI, uvicorn, every listener)
        db = Database(load_config(ctx).database_url)
        db.migrate()
        ctx.obj["db"] = db
    return ctx.obj["db"]


def operator() -> str:
    """Who ran the command, as the audit trail names them."""
    return f"cli:{getpass.getuser()}"[:64]


def timestamp(ts: dt.datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
