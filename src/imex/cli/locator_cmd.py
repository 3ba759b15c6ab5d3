"""`imex locator`: the patient imaging locator."""

from __future__ import annotations

import click
from sqlalchemy import func, select

from imex import audit
from imex.auth.accounts import institution_by_ods
from imex.cli.context import database, load_config
from imex.db.models import Institution, LocatorEntry, LocatorSweep, Node
from imex.locator import policy
from imex.locator.sweep import configure, run_node


@click.group()
def locator() -> None:
    """The patient imaging locator: PACS sweeps, discoverability, networks."""


@locator.command("sweep")
@click.argument("node_name")
@click.option("--off", is_flag=True, help="Stop sweeping this node.")
@click.option("--interval", type=int, help="Minutes between sweeps (default 60).")
@click.option("--lookback", type=int, help="Days of studies the first sweep looks back (default 365).")
@click.option("--rate", type=int, help="Most C-FIND queries per minute (default 30).")
@click.option("--now", "run_now", is_flag=True, help="Run the sweep now, here, and say what it found.")
@click.pass_context
def locator_sweep(
    ctx: click.Context,
    node_name: str,
    off: bool,
    interval: int | None,
    lookback: int | None,
    rate: int | None,
    run_now: bool,
) -> None:
    """Sweep NODE_NAME (a PACS that allows query/retrieve) for the locator, e.g.
    `imex locator sweep RJZ_PACS --interval 60 --lookback 730 --rate 20`."""
    sweep = configure(
        database(ctx),
        node_name,
        enabled=not off,
        interval_minutes=interval,
        lookback_days=lookback,
        queries_per_minute=rate,
    )
    click.echo(
        f"{node_name}: {'not swept' if off else 'swept'} every {sweep.interval_minutes} min, "
        f"{sweep.lookback_days} days back, at most {sweep.queries_per_minute} queries/min"
    )
    if run_now and not off:
        run = run_node(database(ctx), load_config(ctx), sweep.node_id)
        if run.error:
            raise click.ClickException(f"sweep failed (tried again later by the hub): {run.error}")
        click.echo(f"{run.queries} queries, {run.studies} studies, {run.indexed} indexed, up to {run.swept_to}")


@locator.command("discover")
@click.argument("ods")
@click.option(
    "--mode",
    type=click.Choice(["none", "everyone", "restricted"]),
    required=True,
    help="Who may find the institution's holdings.",
)
@click.option("--partner", "partners", multiple=True, help="ODS code of a partner institution (restricted).")
@click.option("--network", "networks", multiple=True, help="Name of a network (restricted).")
@click.pass_context
def locator_discover(
    ctx: click.Context, ods: str, mode: str, partners: tuple[str, ...], networks: tuple[str, ...]
) -> None:
    """Set who may find ODS's holdings, e.g. `imex locator discover RJZ --mode restricted --network Stroke`."""
    with database(ctx).session() as s:
        inst = institution_by_ods(s, ods)
        result = policy.set_policy(s, inst.id, mode, partners=list(partners), networks=list(networks), actor="cli")
        audit.record(
            s,
            "locator.discoverability",
            username="cli",
            object_type="institution",
            object_id=inst.ods_code,
            detail=f"{mode}; partners {', '.join(result.partners) or '-'}; networks "
            f"{', '.join(result.networks) or '-'}",
        )
    click.echo(
        f"{result.ods}: {result.mode}; partners {', '.join(result.partners) or '-'}; networks "
        f"{', '.join(result.networks) or '-'}"
    )


@locator.command("network")
@click.argument("name")
@click.option("--member", "members", multiple=True, help="ODS code of a member institution.")
@click.option("--description", default="", help="What the network is for.")
@click.pass_context
def locator_network(ctx: click.Context, name: str, members: tuple[str, ...], description: str) -> None:
    """Create or replace a network, e.g. `imex locator network "North stroke" --member RJZ --member RYJ`."""
    with database(ctx).session() as s:
        listed = policy.set_network(s, name, list(members), description)
    click.echo(f"network {name}: {', '.join(listed) or '(no members)'}")


@locator.command("status")
@click.pass_context
def locator_status(ctx: click.Context) -> None:
    """Entries by institution and source, and each sweep's progress."""
    with database(ctx).session() as s:
        for ods, source, count in s.execute(
            select(Institution.ods_code, LocatorEntry.source, func.count())
            .join(Institution, Institution.id == LocatorEntry.institution_id)
            .group_by(Institution.ods_code, LocatorEntry.source)
            .order_by(Institution.ods_code)
        ):
            click.echo(f"{ods:8} {source:6} {count} studies")
        for sweep, node in s.execute(
            select(LocatorSweep, Node).join(Node, Node.id == LocatorSweep.node_id).order_by(Node.name)
        ):
            click.echo(
                f"sweep {node.name}: {'on' if sweep.enabled else 'off'}, up to {sweep.swept_to or '-'}, next "
                f"{sweep.next_run_at:%Y-%m-%d %H:%M}" + (f", failing: {sweep.last_error}" if sweep.last_error else "")
            )
