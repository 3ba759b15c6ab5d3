"""`imex jobs`: every durable queue of the hub (deliveries, confirmations, retrievals, report deliveries
and queries, e-mails, uploads, PACS sweeps) as operators see them, and the retry of what was given up."""

from __future__ import annotations

import json

import click

from imex.cli.context import database
from imex.jobs import operate


@click.group()
def jobs() -> None:
    """The hub's durable queues: how each stands, what was given up, retry."""


@jobs.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue instead of a table.")
@click.pass_context
def jobs_list(ctx: click.Context, as_json: bool) -> None:
    """Every queue: jobs due now, running, retrying (failed before), dead, and the oldest due job's wait."""
    found = operate.overview(database(ctx))
    if as_json:
        for s in found:
            click.echo(json.dumps(s.as_dict(), sort_keys=True))
        return
    click.echo(f"{'QUEUE':<18} {'DUE':>6} {'RUNNING':>7} {'RETRYING':>8} {'DEAD':>6} {'OLDEST DUE':>10}  BY STATE")
    for s in found:
        states = ", ".join(f"{k} {v}" for k, v in sorted(s.by_state.items()))
        click.echo(
            f"{s.name:<18} {s.due:>6} {s.running:>7} {s.retrying:>8} {s.dead:>6} "
            f"{s.oldest_due_seconds:>9.0f}s  {states}"
        )


@jobs.command("dead")
@click.argument("queue")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def jobs_dead(ctx: click.Context, queue: str, limit: int) -> None:
    """The newest jobs QUEUE gave up, with their last error."""
    dead = operate.dead_jobs(database(ctx), queue, limit)
    if not dead:
        click.echo(f"no dead jobs in {queue}")
        return
    click.echo(f"{'ID':>8} {'TRIES':>5}  LAST ERROR")
    for job in dead:
        tries = "-" if job.attempts is None else str(job.attempts)
        click.echo(f"{job.id:>8} {tries:>5}  {job.error[:100]}")


@jobs.command("retry")
@click.argument("queue")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every dead job of the queue.")
@click.pass_context
def jobs_retry(ctx: click.Context, queue: str, job_ids: tuple[int, ...], retry_all: bool) -> None:
    """Retry dead jobs of QUEUE now, attempts from zero (JOB_IDS, or --all)."""
    db = database(ctx)
    if retry_all == bool(job_ids):
        raise click.UsageError("name the jobs to retry, or give --all")
    if retry_all:
        click.echo(f"{operate.retry_all(db, queue)} {queue} job(s) retried")
        return
    for job_id in job_ids:
        operate.retry(db, queue, job_id)
        click.echo(f"{queue} job {job_id} retried")
