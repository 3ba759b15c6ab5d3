"""`imex serve`: run the hub."""

from __future__ import annotations

import logging
import signal

import click

from imex.cli.context import load_config
from imex.config import ConfigError


@click.command()
@click.option(
    "--demo",
    is_flag=True,
    help="Add demo hospitals with their PACS, RIS and a mail catcher, and push sample studies with reports once.",
)
@click.pass_context
def serve(ctx: click.Context, demo: bool) -> None:
    """Run the hub: DICOM listener, router, delivery workers, e-mail and HTTP."""
    # imported here, not at the top: the hub brings FastAPI, uvicorn and every listener (over a second),
    # which no other command needs
    from imex import demo as demo_module
    from imex.hub import Hub

    config = load_config(ctx)
    logging.basicConfig(level=config["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        hub = Hub(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    demo_run = demo_module.prepare(hub) if demo else None
    try:
        hub.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}. Is another imex or PACS using the port?") from None

    def _stop(signum, _frame) -> None:
        hub.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if demo_run is not None:
        demo_run.push_sample(hub)
        click.echo(demo_run.banner(hub))
    hub.wait()
    click.echo("stopping: finishing the instances in flight")
    hub.stop()
    if demo_run is not None:
        demo_run.stop()
