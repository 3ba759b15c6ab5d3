"""`imex node`: the DICOM nodes of the institutions."""

from __future__ import annotations

import click

from imex.cli.context import database, load_config
from imex.dicom.echo import echo
from imex.directory import add_node, all_nodes, find_node, remove_node
from imex.errors import NotFound


@click.group()
def node() -> None:
    """DICOM nodes (PACS, modalities, workstations) of the institutions."""


@node.command("add")
@click.argument("name")
@click.option("--ae", "ae_title", required=True, help="The node's AE title.")
@click.option("--host", required=True, help="Host name or address it connects from and listens on.")
@click.option("--port", required=True, type=int, help="Its DICOM port.")
@click.option("--institution", "ods", required=True, help="ODS code of the institution it belongs to.")
@click.option("--alias", help="Called AE title that routes a study to this node alone.")
@click.option("--email", help="Contact e-mail for alerts about this node.")
@click.option("--no-destination", is_flag=True, help="Only sends to the hub; never receives routed studies.")
@click.option("--max-associations", type=int, help="Most transfers sent to it at once.")
@click.option(
    "--confirm",
    type=click.Choice(["none", "commitment", "count"]),
    help="How delivery to it is confirmed: none (default), commitment (DICOM Storage Commitment) "
    "or count (C-FIND of the instances it holds).",
)
@click.option(
    "--query-retrieve", is_flag=True, help="The hub may search (C-FIND) and retrieve (C-MOVE) from it for exchanges."
)
@click.option(
    "--allow-find/--no-find",
    "allow_find",
    default=None,
    help="Whether it may search the hub (C-FIND), seeing what its institution may see (default: allowed; "
    "with --update: unchanged).",
)
@click.option(
    "--allow-move/--no-move",
    "allow_move",
    default=None,
    help="Whether it may retrieve from the hub (C-MOVE) to its institution's nodes (default: allowed; "
    "with --update: unchanged).",
)
@click.option(
    "--allow-get/--no-get",
    "allow_get",
    default=None,
    help="Whether it may retrieve from the hub over its own association (C-GET) (default: allowed; "
    "with --update: unchanged).",
)
@click.option("--update", is_flag=True, help="Change an existing node.")
@click.pass_context
def node_add(
    ctx: click.Context,
    name: str,
    ae_title: str,
    host: str,
    port: int,
    ods: str,
    alias: str | None,
    email: str | None,
    no_destination: bool,
    max_associations: int | None,
    confirm: str | None,
    query_retrieve: bool,
    allow_find: bool | None,
    allow_move: bool | None,
    allow_get: bool | None,
    update: bool,
) -> None:
    """Register a node, e.g. `imex node add KINGS_PACS --ae KINGSPACS --host 10.1.2.3 --port 104
    --institution RJZ`."""
    n = add_node(
        database(ctx),
        name,
        ae_title,
        host,
        port,
        ods,
        alias=alias,
        contact_email=email,
        destination=not no_destination,
        max_associations=max_associations,
        update=update,
        confirm=confirm,
        query_retrieve=query_retrieve or None,
        allow_find=allow_find,
        allow_move=allow_move,
        allow_get=allow_get,
    )
    click.echo(
        f"{'updated' if update else 'added'} node {n.name}: {n.ae_title}@{n.host}:{n.port}"
        + (f", delivery confirmed by {n.confirm}" if n.confirm != "none" else "")
    )


@node.command("list")
@click.pass_context
def node_list(ctx: click.Context) -> None:
    """The nodes; Q/R BY NODE is what each may use on the hub's listener (find, move, get, or none)."""
    click.echo(f"{'NAME':<20} {'AE TITLE':<16} {'ADDRESS':<24} {'ODS':<6} {'ALIAS':<12} {'Q/R BY NODE':<14} ROLE")
    for n in all_nodes(database(ctx)):
        role = ("destination" if n.destination else "source only") + ("" if n.enabled else ", disabled")
        qr = ",".join(s for s, on in (("find", n.allow_find), ("move", n.allow_move), ("get", n.allow_get)) if on)
        click.echo(
            f"{n.name:<20} {n.ae_title:<16} {n.host + ':' + str(n.port):<24} {n.ods_code:<6} {n.alias or '':<12} "
            f"{qr or 'none':<14} {role}"
        )


@node.command("remove")
@click.argument("name")
@click.pass_context
def node_remove(ctx: click.Context, name: str) -> None:
    """Remove a node (disabled instead when transfers refer to it)."""
    if remove_node(database(ctx), name):
        click.echo(f"removed node {name}")
    else:
        click.echo(
            f"disabled node {name}: transfers refer to it, so it is kept for their history; it no longer "
            "connects to the hub nor receives studies"
        )


@node.command("echo")
@click.argument("name")
@click.pass_context
def node_echo(ctx: click.Context, name: str) -> None:
    """C-ECHO a node from the hub's AE title: is it reachable and does it accept the hub?"""
    config = load_config(ctx)
    n = find_node(database(ctx), name)
    if n is None:
        raise NotFound(f"no node named {name}")
    result = echo(config["dicom.ae_title"], name, n.ae_title, n.host, n.port)
    if not result.ok:
        raise click.ClickException(result.message)
    click.echo(result.message)
