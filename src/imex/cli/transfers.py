"""`imex transfers`: the delivery queue."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import click
from sqlalchemy import select

from imex.cli.context import database, timestamp
from imex.db.models import Institution, Node, Patient, Study, Transfer, TransferEvent, TransferItem
from imex.errors import NotFound
from imex.routing import queue
from imex.routing.queue import QueueError


@click.group()
def transfers() -> None:
    """The delivery queue: one transfer per (study, destination)."""


@transfers.command("list")
@click.option(
    "--state", type=click.Choice(["pending", "sending", "held", "delivered", "confirmed", "failed", "cancelled"])
)
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def transfers_list(ctx: click.Context, state: str | None, limit: int) -> None:
    with database(ctx).session() as s:
        query = (
            select(Transfer, Study, Node, Patient)
            .join(Study, Study.id == Transfer.study_id)
            .join(Node, Node.id == Transfer.destination_node_id)
            .join(Patient, Patient.id == Study.patient_pk)
            .order_by(Transfer.id.desc())
            .limit(limit)
        )
        if state:
            query = query.where(Transfer.state == state)
        click.echo(
            f"{'ID':>6} {'STATE':<10} {'SENT':>9} {'TRIES':>5} {'DESTINATION':<18} {'PATIENT':<14} "
            f"{'DATE':<8} {'MOD':<6} {'UPDATED':<19} ERROR"
        )
        for t, st, n, p in s.execute(query).all():
            click.echo(
                f"{t.id:>6} {t.state:<10} {f'{t.instances_sent}/{t.instances_total}':>9} {t.attempts:>5} "
                f"{n.name[:18]:<18} {p.patient_id[:14]:<14} {st.study_date:<8} {st.modalities[:6]:<6} "
                f"{timestamp(t.updated_at):<19} {(t.last_error or '')[:60]}"
            )


@transfers.command("show")
@click.argument("transfer_id", type=int)
@click.pass_context
def transfers_show(ctx: click.Context, transfer_id: int) -> None:
    """A transfer with its study, progress, failed instances and history."""
    with database(ctx).session() as s:
        row = s.execute(
            select(Transfer, Study, Node, Institution)
            .join(Study, Study.id == Transfer.study_id)
            .join(Node, Node.id == Transfer.destination_node_id)
            .join(Institution, Institution.id == Node.institution_id)
            .where(Transfer.id == transfer_id)
        ).first()
        if row is None:
            raise NotFound(f"no transfer {transfer_id}")
        t, st, n, inst = row
        click.echo(f"transfer {t.id}: {t.state}  ({t.reason})")
        click.echo(
            f"  study        {st.study_uid}  {st.study_date} {st.modalities} {st.description!r} "
            f"accession {st.accession_number!r}"
        )
        click.echo(f"  destination  {n.name} {n.ae_title}@{n.host}:{n.port} ({inst.ods_code} {inst.name})")
        click.echo(
            f"  progress     {t.instances_sent}/{t.instances_total} instances, {t.bytes_sent} bytes, "
            f"{t.attempts} attempt(s)"
        )
        click.echo(
            f"  created      {timestamp(t.created_at)}   delivered {timestamp(t.delivered_at)}   "
            f"next attempt {timestamp(t.next_attempt_at) if t.state == 'pending' else '-'}"
        )
        if t.last_error:
            click.echo(f"  last error   {t.last_error}")
        failed = (
            s.execute(
                select(TransferItem)
                .where(TransferItem.transfer_id == t.id, TransferItem.error.is_not(None), TransferItem.state != "sent")
                .limit(20)
            )
            .scalars()
            .all()
        )
        for item in failed:
            click.echo(f"  instance {item.instance_id}: {item.error}")
        click.echo("  history:")
        for e in s.scalars(select(TransferEvent).where(TransferEvent.transfer_id == t.id).order_by(TransferEvent.id)):
            click.echo(f"    {timestamp(e.at)}  {e.event:<16} {e.detail}")


@transfers.command("retry")
@click.argument("transfer_ids", type=int, nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed transfer.")
@click.pass_context
def transfers_retry(ctx: click.Context, transfer_ids: tuple[int, ...], all_failed: bool) -> None:
    """Retry failed or cancelled transfers now."""
    db = database(ctx)
    ids = list(transfer_ids)
    if all_failed:
        with db.session() as s:
            ids += list(s.scalars(select(Transfer.id).where(Transfer.state == "failed")))
    if not ids and not all_failed:
        raise click.UsageError("give transfer ids or --all-failed")
    if not ids:
        click.echo("no failed transfers")
        return
    _each(ids, partial(queue.retry, db), "queued again")


@transfers.command("cancel")
@click.argument("transfer_ids", type=int, nargs=-1, required=True)
@click.pass_context
def transfers_cancel(ctx: click.Context, transfer_ids: tuple[int, ...]) -> None:
    """Cancel transfers (a transfer being sent stops before its next instance)."""
    _each(list(transfer_ids), partial(queue.cancel, database(ctx)), "cancelled")


def _each(ids: list[int], change: Callable[[int], None], done: str) -> None:
    """Change each transfer, saying what became of it; exit 1 when the queue refused any (after trying all)."""
    refused = 0
    for tid in ids:
        try:
            change(tid)
        except QueueError as exc:
            click.echo(f"error: {exc}", err=True)
            refused += 1
        else:
            click.echo(f"transfer {tid}: {done}")
    if refused:
        sys.exit(1)
