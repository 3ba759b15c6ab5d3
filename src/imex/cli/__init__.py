"""The `imex` command line: run the hub, manage institutions and nodes, watch and steer the queue."""
from __future__ import annotations

import logging
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import click
from sqlalchemy import func, select

from imex import config as config_module
from imex.config import Config, ConfigError
from imex.db import Database
from imex.db.models import (
    Institution,
    Node,
    Patient,
    Study,
    Transfer,
    TransferEvent,
    TransferItem,
)
from imex.directory import DirectoryError
from imex.routing.queue import QueueError


def _load(ctx: click.Context) -> Config:
    try:
        return config_module.load(ctx.obj.get("config_path"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _db(ctx: click.Context) -> Database:
    from imex.hub import open_database

    if "db" not in ctx.obj:
        ctx.obj["db"] = open_database(_load(ctx))
    return ctx.obj["db"]


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="IMEX_CONFIG",
              help="imex.toml to read (default: ./imex.toml when present).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """imex: an image exchange hub for hospitals."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


# -- serve -----------------------------------------------------------------------------------------

@main.command()
@click.option("--demo", is_flag=True, help="Add demo institutions and nodes, run a demo destination PACS "
                                          "and push a sample study through the hub.")
@click.pass_context
def serve(ctx: click.Context, demo: bool) -> None:
    """Run the hub: DICOM listener, router, delivery workers, e-mail and HTTP."""
    from imex.hub import Hub

    config = _load(ctx)
    logging.basicConfig(level=config["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        hub = Hub(config)
    except (ConfigError, DirectoryError) as exc:
        raise click.ClickException(str(exc)) from None
    demo_run = None
    if demo:
        from imex import demo as demo_module

        demo_run = demo_module.prepare(hub)
    try:
        hub.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}. Is another imex or PACS using the port?") from None

    def _stop(signum, _frame) -> None:  # type: ignore[no-untyped-def]
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


# -- config ----------------------------------------------------------------------------------------

@main.group("config")
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
    config = _load(ctx)
    for key, value in config.values.items():
        click.echo(f"{key} = {config_module.display_value(key, value)!r}")


# -- institutions and nodes ----------------------------------------------------------------------------

@main.group()
def institution() -> None:
    """Hospitals and trusts, by ODS code."""


@institution.command("add")
@click.argument("ods")
@click.argument("name")
@click.option("--alias", help="Called AE title that routes studies to this institution (default: the ODS code).")
@click.option("--email", help="Contact e-mail for alerts.")
@click.pass_context
def institution_add(ctx: click.Context, ods: str, name: str, alias: str | None, email: str | None) -> None:
    """Add an institution, e.g. `imex institution add RJZ "King's College Hospital"`."""
    from imex.directory import add_institution

    try:
        inst = add_institution(_db(ctx), ods, name, alias=alias, contact_email=email)
    except DirectoryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added institution {inst.ods_code} ({inst.name}); alias {inst.alias}")


@institution.command("list")
@click.pass_context
def institution_list(ctx: click.Context) -> None:
    from imex.directory import list_institutions

    rows = list_institutions(_db(ctx))
    click.echo(f"{'ODS':<8} {'ALIAS':<16} {'CONTACT':<30} NAME")
    for inst in rows:
        click.echo(f"{inst.ods_code:<8} {inst.alias or '':<16} {inst.contact_email or '':<30} {inst.name}")


@main.group()
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
@click.option("--confirm", type=click.Choice(["none", "commitment", "count"]),
              help="How delivery to it is confirmed: none (default), commitment (DICOM Storage Commitment) "
                   "or count (C-FIND of the instances it holds).")
@click.option("--query-retrieve", is_flag=True,
              help="The hub may search (C-FIND) and retrieve (C-MOVE) from it for exchanges.")
@click.option("--update", is_flag=True, help="Change an existing node.")
@click.pass_context
def node_add(ctx: click.Context, name: str, ae_title: str, host: str, port: int, ods: str, alias: str | None,
             email: str | None, no_destination: bool, max_associations: int | None, confirm: str | None,
             query_retrieve: bool, update: bool) -> None:
    """Register a node, e.g. `imex node add KINGS_PACS --ae KINGSPACS --host 10.1.2.3 --port 104
    --institution RJZ`."""
    from imex.directory import add_node

    try:
        n = add_node(_db(ctx), name, ae_title, host, port, ods, alias=alias, contact_email=email,
                     destination=not no_destination, max_associations=max_associations, update=update,
                     confirm=confirm, query_retrieve=query_retrieve or None)
    except DirectoryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'updated' if update else 'added'} node {n.name}: {n.ae_title}@{n.host}:{n.port}"
               + (f", delivery confirmed by {n.confirm}" if n.confirm != "none" else ""))


@node.command("list")
@click.pass_context
def node_list(ctx: click.Context) -> None:
    from imex.directory import all_nodes

    click.echo(f"{'NAME':<20} {'AE TITLE':<16} {'ADDRESS':<24} {'ODS':<6} {'ALIAS':<12} ROLE")
    for n in all_nodes(_db(ctx)):
        role = ("destination" if n.destination else "source only") + ("" if n.enabled else ", disabled")
        click.echo(f"{n.name:<20} {n.ae_title:<16} {n.host + ':' + str(n.port):<24} {n.ods_code:<6} "
                   f"{n.alias or '':<12} {role}")


@node.command("remove")
@click.argument("name")
@click.pass_context
def node_remove(ctx: click.Context, name: str) -> None:
    """Remove a node (disabled instead when transfers refer to it)."""
    from imex.directory import remove_node

    db = _db(ctx)
    try:
        remove_node(db, name)
    except DirectoryError as exc:
        raise click.ClickException(str(exc)) from None
    with db.session() as s:
        kept = s.scalar(select(Node.id).where(Node.name == name)) is not None
    if kept:
        click.echo(f"disabled node {name}: transfers refer to it, so it is kept for their history; it no longer "
                   "connects to the hub nor receives studies")
    else:
        click.echo(f"removed node {name}")


@node.command("echo")
@click.argument("name")
@click.pass_context
def node_echo(ctx: click.Context, name: str) -> None:
    """C-ECHO a node from the hub's AE title: is it reachable and does it accept the hub?"""
    from imex.dicom.echo import echo

    config = _load(ctx)
    with _db(ctx).session() as s:
        n = s.scalar(select(Node).where(Node.name == name))
        if n is None:
            raise click.ClickException(f"no node named {name}")
        ae_title, host, port = n.ae_title, n.host, n.port
    result = echo(config["dicom.ae_title"], name, ae_title, host, port)
    if not result.ok:
        raise click.ClickException(result.message)
    click.echo(result.message)


# -- transfers and quarantine -------------------------------------------------------------------------

def _age(ts) -> str:  # type: ignore[no-untyped-def]
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@main.group()
def transfers() -> None:
    """The delivery queue: one transfer per (study, destination)."""


@transfers.command("list")
@click.option("--state", type=click.Choice(["pending", "sending", "held", "delivered", "confirmed", "failed", "cancelled"]))
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def transfers_list(ctx: click.Context, state: str | None, limit: int) -> None:
    with _db(ctx).session() as s:
        query = (select(Transfer, Study, Node, Patient).join(Study, Study.id == Transfer.study_id)
                 .join(Node, Node.id == Transfer.destination_node_id).join(Patient, Patient.id == Study.patient_pk)
                 .order_by(Transfer.id.desc()).limit(limit))
        if state:
            query = query.where(Transfer.state == state)
        click.echo(f"{'ID':>6} {'STATE':<10} {'SENT':>9} {'TRIES':>5} {'DESTINATION':<18} {'PATIENT':<14} "
                   f"{'DATE':<8} {'MOD':<6} {'UPDATED':<19} ERROR")
        for t, st, n, p in s.execute(query).all():
            click.echo(f"{t.id:>6} {t.state:<10} {f'{t.instances_sent}/{t.instances_total}':>9} {t.attempts:>5} "
                       f"{n.name[:18]:<18} {p.patient_id[:14]:<14} {st.study_date:<8} {st.modalities[:6]:<6} "
                       f"{_age(t.updated_at):<19} {(t.last_error or '')[:60]}")


@transfers.command("show")
@click.argument("transfer_id", type=int)
@click.pass_context
def transfers_show(ctx: click.Context, transfer_id: int) -> None:
    """A transfer with its study, progress, failed instances and history."""
    with _db(ctx).session() as s:
        t = s.get(Transfer, transfer_id)
        if t is None:
            raise click.ClickException(f"no transfer {transfer_id}")
        st = s.get(Study, t.study_id)
        n = s.get(Node, t.destination_node_id)
        inst = s.get(Institution, n.institution_id)
        click.echo(f"transfer {t.id}: {t.state}  ({t.reason})")
        click.echo(f"  study        {st.study_uid}  {st.study_date} {st.modalities} {st.description!r} "
                   f"accession {st.accession_number!r}")
        click.echo(f"  destination  {n.name} {n.ae_title}@{n.host}:{n.port} ({inst.ods_code} {inst.name})")
        click.echo(f"  progress     {t.instances_sent}/{t.instances_total} instances, {t.bytes_sent} bytes, "
                   f"{t.attempts} attempt(s)")
        click.echo(f"  created      {_age(t.created_at)}   delivered {_age(t.delivered_at)}   "
                   f"next attempt {_age(t.next_attempt_at) if t.state == 'pending' else '-'}")
        if t.last_error:
            click.echo(f"  last error   {t.last_error}")
        failed = s.execute(select(TransferItem).where(TransferItem.transfer_id == t.id,
                                                      TransferItem.error.is_not(None),
                                                      TransferItem.state != "sent").limit(20)).scalars().all()
        for item in failed:
            click.echo(f"  instance {item.instance_id}: {item.error}")
        click.echo("  history:")
        for e in s.scalars(select(TransferEvent).where(TransferEvent.transfer_id == t.id).order_by(TransferEvent.id)):
            click.echo(f"    {_age(e.at)}  {e.event:<16} {e.detail}")


@transfers.command("retry")
@click.argument("transfer_ids", type=int, nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed transfer.")
@click.pass_context
def transfers_retry(ctx: click.Context, transfer_ids: tuple[int, ...], all_failed: bool) -> None:
    """Retry failed or cancelled transfers now."""
    from imex.routing import queue

    db = _db(ctx)
    ids = list(transfer_ids)
    if all_failed:
        with db.session() as s:
            ids += list(s.scalars(select(Transfer.id).where(Transfer.state == "failed")))
    if not ids and not all_failed:
        raise click.UsageError("give transfer ids or --all-failed")
    if not ids:
        click.echo("no failed transfers")
        return
    problems = 0
    for tid in ids:
        try:
            queue.retry(db, tid)
            click.echo(f"transfer {tid}: queued again")
        except QueueError as exc:
            click.echo(f"error: {exc}", err=True)
            problems += 1
    if problems:
        sys.exit(1)


@transfers.command("cancel")
@click.argument("transfer_ids", type=int, nargs=-1, required=True)
@click.pass_context
def transfers_cancel(ctx: click.Context, transfer_ids: tuple[int, ...]) -> None:
    """Cancel transfers (a transfer being sent stops before its next instance)."""
    from imex.routing import queue

    problems = 0
    for tid in transfer_ids:
        try:
            queue.cancel(_db(ctx), tid)
            click.echo(f"transfer {tid}: cancelled")
        except QueueError as exc:
            click.echo(f"error: {exc}", err=True)
            problems += 1
    if problems:
        sys.exit(1)


@main.group()
def quarantine() -> None:
    """Studies that matched no destination, with the reason."""


@quarantine.command("list")
@click.pass_context
def quarantine_list(ctx: click.Context) -> None:
    with _db(ctx).session() as s:
        rows = s.execute(select(Study, Institution).join(Institution, Institution.id == Study.institution_id)
                         .where(Study.route_state == "quarantined").order_by(Study.last_received_at)).all()
        if not rows:
            click.echo("quarantine is empty")
        for st, inst in rows:
            click.echo(f"{st.study_uid}  from {inst.ods_code}  {st.study_date} {st.modalities} "
                       f"{st.num_instances} instances  received {_age(st.last_received_at)}\n    reason: "
                       f"{st.quarantine_reason}")


@quarantine.command("route")
@click.argument("study_uid")
@click.option("--to", "targets", multiple=True, required=True, help="ODS code or node name (repeatable).")
@click.pass_context
def quarantine_route(ctx: click.Context, study_uid: str, targets: tuple[str, ...]) -> None:
    """Send a quarantined study to the destinations given."""
    from imex.routing.router import route_manually

    try:
        ids = route_manually(_db(ctx), study_uid, list(targets))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued transfer(s) {', '.join(map(str, ids)) or '(none: already delivered)'}")


# -- sharing folders -----------------------------------------------------------------------------------

@main.group()
def folder() -> None:
    """Sharing folders: emergency (every participating institution) and elective (members only)."""


@folder.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["emergency", "elective"]), required=True)
@click.option("--alias", help="Called AE title that files studies sent to it into the folder.")
@click.option("--hours", type=int, help="Hours a study stays (default 18 emergency, 192 elective).")
@click.option("--institution", "institutions", multiple=True, help="ODS code of a participating institution.")
@click.option("--owner", help="ODS code of the institution whose admins manage an elective folder.")
@click.pass_context
def folder_add(ctx: click.Context, name: str, kind: str, alias: str | None, hours: int | None,
               institutions: tuple[str, ...], owner: str | None) -> None:
    """Create a folder, e.g. `imex folder add Emergency --kind emergency --alias EMERGENCY --institution RJZ`."""
    from imex.folders.manage import FolderError, add_folder

    try:
        add_folder(_db(ctx), name, kind, alias=alias, hours=hours, institutions_ods=list(institutions),
                   owner_ods=owner)
    except FolderError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {kind} folder {name}" + (f"; PACS send to AE title {alias.upper()}" if alias else ""))


@folder.command("list")
@click.pass_context
def folder_list(ctx: click.Context) -> None:
    """Folders with their institutions and the studies in them now."""
    from imex.db.models import Folder, FolderInstitution, FolderStudy
    from imex.db.models import utcnow as now

    with _db(ctx).session() as s:
        found = s.scalars(select(Folder).order_by(Folder.name)).all()
        if not found:
            click.echo("no folders; add one with `imex folder add`")
        for f in found:
            ods = s.scalars(select(Institution.ods_code).join(FolderInstitution, FolderInstitution.institution_id
                                                              == Institution.id).where(FolderInstitution.folder_id == f.id))
            count = s.scalar(select(func.count()).select_from(FolderStudy).where(
                FolderStudy.folder_id == f.id, FolderStudy.expires_at > now()))
            click.echo(f"{f.name:24} {f.kind:9} {f.alias or '-':16} {f.retention_hours:5} h  {count:4} studies  "
                       f"{', '.join(ods) or '(no institution)'}")


# -- retention ---------------------------------------------------------------------------------------

@main.group()
def retention() -> None:
    """Expired studies: delete them now, see what was deleted, find stray files."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--batch", default=500, show_default=True, help="Most studies to delete.")
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool, batch: int) -> None:
    """Run one retention pass now (the hub runs one every retention.scan_interval)."""
    from imex.retention.job import run_once
    from imex.store import BlobStore

    config = _load(ctx)
    result = run_once(_db(ctx), BlobStore(config.store_path, fsync=config["store.fsync"]), batch=batch,
                      dry_run=dry_run)
    if dry_run:
        click.echo("\n".join(result.candidates) or "nothing has expired")
        return
    for d in result.deleted:
        click.echo(f"deleted {d.study_uid}: {d.instances} instances, {d.bytes} bytes")
    if not result.deleted:
        click.echo("nothing has expired")


@retention.command("tombstones")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def retention_tombstones(ctx: click.Context, limit: int) -> None:
    """Deleted studies, newest first: what, when and why."""
    from imex.db.models import Tombstone

    with _db(ctx).session() as s:
        rows = s.scalars(select(Tombstone).order_by(Tombstone.id.desc()).limit(limit)).all()
        if not rows:
            click.echo("no study has been deleted")
        for t in rows:
            click.echo(f"{t.deleted_at:%Y-%m-%d %H:%M}  {t.study_uid}  {t.study_date} {t.modalities} "
                       f"{t.instances} instances\n    {t.reason}")


@retention.command("orphans")
@click.option("--delete", is_flag=True, help="Delete them (files older than an hour that no instance uses).")
@click.pass_context
def retention_orphans(ctx: click.Context, delete: bool) -> None:
    """Blob files no instance refers to (left by a crash between a deletion and its file removal)."""
    from imex.index.remove import orphans
    from imex.store import BlobStore

    config = _load(ctx)
    store = BlobStore(config.store_path, fsync=config["store.fsync"])
    found = list(orphans(_db(ctx), store))
    for key in found:
        click.echo(key)
        if delete:
            store.delete(key)
    click.echo(f"{len(found)} orphan blob(s){' deleted' if delete and found else ''}")


# -- header harmonisation --------------------------------------------------------------------------

@main.group()
def harmonise() -> None:
    """Header harmonisation: rule checks, dry runs, transfers held for reconciliation."""


def _harmoniser(ctx: click.Context):  # type: ignore[no-untyped-def]
    from imex.harmonise.prepare import Harmoniser

    try:
        return Harmoniser.from_config(_load(ctx))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@harmonise.command("check")
@click.pass_context
def harmonise_check(ctx: click.Context) -> None:
    """Check the [[harmonise]] rules of imex.toml as `imex serve` would at start-up."""
    rules = _harmoniser(ctx).rules
    for rule in rules:
        click.echo(f"line {rule.line or '?'}: {rule.name}")
    click.echo(f"{len(rules)} harmonisation rule(s): ok")


@harmonise.command("preview")
@click.argument("study_uid")
@click.option("--to", "target", required=True, help="Destination ODS code or node name.")
@click.pass_context
def harmonise_preview(ctx: click.Context, study_uid: str, target: str) -> None:
    """Print the attributes that would change, old and new, if STUDY_UID were sent to --to now."""
    from imex.harmonise.preview import PreviewError, preview, render
    from imex.store import BlobStore

    config = _load(ctx)
    harmoniser = _harmoniser(ctx)
    try:
        results = preview(_db(ctx), BlobStore(config.store_path, fsync=False), harmoniser, study_uid, target)
    except PreviewError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render(results))


@harmonise.command("held")
@click.option("--institution", "ods", help="Only transfers this institution (ODS code) sends or receives.")
@click.pass_context
def harmonise_held(ctx: click.Context, ods: str | None) -> None:
    """Transfers held for reconciliation, oldest first."""
    from imex.harmonise.reconcile import pending_reconciliations

    db = _db(ctx)
    with db.engine.connect() as conn:
        institution_id = None
        if ods:
            with db.session() as s:
                institution_id = s.scalar(select(Institution.id).where(Institution.ods_code == ods.upper()))
            if institution_id is None:
                raise click.ClickException(f"no institution {ods}")
        rows = pending_reconciliations(conn, institution_id)
    if not rows:
        click.echo("no transfers are held for reconciliation")
    for r in rows:
        click.echo(f"transfer {r.transfer_id}: {r.source_ods} -> {r.destination_node} ({r.destination_ods})  "
                   f"{r.study_date} {r.modalities} {r.description!r} accession {r.accession_number!r}  "
                   f"held {_age(r.held_at)}\n    {r.reason}")


@harmonise.command("reconcile")
@click.argument("transfer_id", type=int)
@click.option("--patient-id", required=True, help="Patient ID to send with (an NHS number, or the destination's ID).")
@click.option("--accession", help="Accession number to send with (default: as the rules make it).")
@click.option("--issuer", help="Issuer of the patient ID (default: NHS for an NHS number, else the "
                               "destination's ODS code).")
@click.option("--actor", default=lambda: __import__("getpass").getuser(), show_default="the current user",
              help="Who reconciled it, for the transfer's history.")
@click.pass_context
def harmonise_reconcile(ctx: click.Context, transfer_id: int, patient_id: str, accession: str | None,
                        issuer: str | None, actor: str) -> None:
    """Release a held transfer with the patient ID (and accession number) to send it with."""
    from imex.harmonise.reconcile import ReconcileError, reconcile

    try:
        reconcile(_db(ctx), transfer_id, patient_id, accession, actor, issuer=issuer)
    except ReconcileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"transfer {transfer_id}: reconciled by {actor}; queued to send")


# -- send ------------------------------------------------------------------------------------------

# -- users ---------------------------------------------------------------------------------------------

def _policy(ctx: click.Context):  # type: ignore[no-untyped-def]
    from imex.auth.accounts import LoginPolicy

    return LoginPolicy.from_config(_load(ctx))


def _user(session, username: str):  # type: ignore[no-untyped-def]
    from imex.db.models import User

    found = session.scalar(select(User).where(User.username == username))
    if found is None:
        raise click.ClickException(f"no user {username!r}; `imex user list` shows them")
    return found


def _cli_audit(session, action: str, username: str, detail: str = "") -> None:  # type: ignore[no-untyped-def]
    import getpass

    from imex import audit

    audit.record(session, action, username=f"cli:{getpass.getuser()}"[:64], object_type="user", object_id=username,
                 detail=detail)


@main.group()
def user() -> None:
    """Portal users: add, reset, disable, grant roles."""


@user.command("add")
@click.argument("username")
@click.option("--institution", "ods", required=True, help="ODS code of the user's institution.")
@click.option("--name", "full_name", default="", help="Full name.")
@click.option("--email", default="", help="E-mail address for notifications.")
@click.option("--role", "roles", multiple=True, help="Role to grant (repeatable): system_admin, "
              "institution_admin, sender, viewer, pacs_guardian, auditor or one of the institution's own.")
@click.option("--admin", is_flag=True, help="Make this user a system admin (the hub's first admin).")
@click.option("--password", help="Initial password (default: ask; the user must change it at first sign-in).")
@click.pass_context
def user_add(ctx: click.Context, username: str, ods: str, full_name: str, email: str, roles: tuple[str, ...],
             admin: bool, password: str | None) -> None:
    """Add a portal user, e.g. `imex user add jsmith --institution RJZ --role sender`."""
    from imex.auth.accounts import AccountError, add_user, institution_by_ods

    if password is None:
        password = click.prompt("Initial password", hide_input=True, confirmation_prompt=True)
    wanted = list(dict.fromkeys([*roles, *(["system_admin"] if admin else [])]))
    policy = _policy(ctx)
    with _db(ctx).sessions() as s:
        try:
            added = add_user(s, username=username, institution=institution_by_ods(s, ods.upper()), password=password,
                             full_name=full_name, email=email, roles=wanted, policy=policy,
                             must_change_password=True)
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        _cli_audit(s, "user.add", added.username, f"roles: {', '.join(wanted) or 'none'}")
        s.commit()
    click.echo(f"added {username} at {ods.upper()} with roles {', '.join(wanted) or '(none)'}; "
               "they choose a new password at first sign-in")


@user.command("list")
@click.option("--institution", "ods", help="Only this institution's users.")
@click.pass_context
def user_list(ctx: click.Context, ods: str | None) -> None:
    """List users with their roles and state."""
    from imex.auth.accounts import role_names
    from imex.db.models import User

    with _db(ctx).sessions() as s:
        query = select(User, Institution.ods_code).join(Institution, Institution.id == User.institution_id)
        if ods:
            query = query.where(Institution.ods_code == ods.upper())
        rows = s.execute(query.order_by(Institution.ods_code, User.username)).all()
        if not rows:
            click.echo("no users; add the first admin with `imex user add NAME --institution ODS --admin`")
        for u, inst in rows:
            state = "disabled" if u.disabled else "active"
            click.echo(f"{u.username:20} {inst:8} {state:9} {'2FA' if u.totp_enabled else '   '} "
                       f"{', '.join(role_names(s, u.id)) or '(no roles)'}")


@user.command("reset")
@click.argument("username")
@click.option("--remove-second-factor", is_flag=True, help="Also remove their authenticator (lost phone).")
@click.pass_context
def user_reset(ctx: click.Context, username: str, remove_second_factor: bool) -> None:
    """Give a user a one-time password (printed), unlock them and end their sessions."""
    from imex.auth import sessions
    from imex.auth.accounts import reset_password

    with _db(ctx).sessions() as s:
        found = _user(s, username)
        temporary = reset_password(s, found)
        if remove_second_factor:
            found.totp_enabled, found.totp_secret, found.totp_last_step = False, None, None
        sessions.revoke_all(s, found.id)
        _cli_audit(s, "user.reset", username, "second factor removed" if remove_second_factor else "")
        s.commit()
    click.echo(f"one-time password for {username}: {temporary}\n(they must choose a new one at sign-in)")


@user.command("disable")
@click.argument("username")
@click.pass_context
def user_disable(ctx: click.Context, username: str) -> None:
    """Disable a user and end their sessions (the audit trail keeps their history)."""
    from imex.auth import sessions

    with _db(ctx).sessions() as s:
        found = _user(s, username)
        found.disabled = True
        sessions.revoke_all(s, found.id)
        _cli_audit(s, "user.disable", username)
        s.commit()
    click.echo(f"disabled {username}")


@user.command("enable")
@click.argument("username")
@click.pass_context
def user_enable(ctx: click.Context, username: str) -> None:
    """Enable a disabled user."""
    with _db(ctx).sessions() as s:
        _user(s, username).disabled = False
        _cli_audit(s, "user.enable", username)
        s.commit()
    click.echo(f"enabled {username}")


@user.command("grant")
@click.argument("username")
@click.argument("role")
@click.option("--revoke", is_flag=True, help="Take the role away instead.")
@click.pass_context
def user_grant(ctx: click.Context, username: str, role: str, revoke: bool) -> None:
    """Grant a role to a user (or take it away with --revoke)."""
    from imex.auth.accounts import AccountError, grant_role, revoke_role

    with _db(ctx).sessions() as s:
        found = _user(s, username)
        try:
            (revoke_role if revoke else grant_role)(s, found, role)
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        _cli_audit(s, "role.revoke" if revoke else "role.grant", username, role)
        s.commit()
    click.echo(f"{'took' if revoke else 'granted'} {role} {'from' if revoke else 'to'} {username}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "destination", required=True, help="Destination ODS code (or any alias the hub answers to).")
@click.option("--hub", help="HOST[:PORT] of the hub (default: send.hub and dicom.port settings).")
@click.option("--aet", help="Calling AE title (default: the send.calling_aet setting); must be a registered node.")
@click.pass_context
def send(ctx: click.Context, paths: tuple[Path, ...], destination: str, hub: str | None, aet: str | None) -> None:
    """Push files, folders, zips or a CD (DICOMDIR) to the hub for a destination."""
    from imex.dicom.push import PushReport, collect, push

    config = _load(ctx)
    host, port = config["send.hub"], config["dicom.port"]
    if hub:
        host, _, raw_port = hub.rpartition(":") if ":" in hub else (hub, "", "")
        try:
            port = int(raw_port) if raw_port else port
        except ValueError:
            raise click.BadParameter(f"{hub!r} is not HOST or HOST:PORT", param_hint="--hub") from None
        host = host or config["send.hub"]
    called = destination.strip().upper()
    report = PushReport()
    with ExitStack() as scratch:
        files = collect(paths, scratch, report)
        if not files:
            raise click.ClickException("no DICOM files found in " + ", ".join(map(str, paths)))
        with click.progressbar(length=len(files), label=f"sending {len(files)} instances to {called}",
                               file=sys.stderr) as bar:
            push(files, host=host, port=port, called_aet=called, calling_aet=aet or config["send.calling_aet"],
                 report=report, progress=bar.update)
    for path, why in report.skipped[:20]:
        click.echo(f"skipped {path}: {why}", err=True)
    for path, why in report.failed[:20]:
        click.echo(f"failed  {path}: {why}", err=True)
    click.echo(f"sent {report.sent}, failed {len(report.failed)}, skipped {len(report.skipped)}")
    if report.failed:
        sys.exit(1)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Counts of studies and transfers by state."""
    with _db(ctx).session() as s:
        for label, col in (("studies", Study.route_state), ("transfers", Transfer.state)):
            counts = s.execute(select(col, func.count()).group_by(col)).all()
            click.echo(f"{label}: " + (", ".join(f"{k} {v}" for k, v in counts) or "none"))


# -- HL7 reports ------------------------------------------------------------------------------------

@main.group()
def hl7() -> None:
    """HL7 v2 reports: send a message over MLLP, show a study's reports."""


@hl7.command("send")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to", required=True, metavar="HOST:PORT", help="MLLP listener to send to.")
@click.option("--tls", is_flag=True, help="Use MLLP over TLS.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the ACK.")
def hl7_send(file: Path, to: str, tls: bool, timeout: float) -> None:
    """Send the HL7 message(s) in FILE (segments ending in CR or newlines; several messages each start
    with MSH) and print each ACK."""
    import re

    from imex.hl7 import client

    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise click.ClickException(f"--to {to!r} must be HOST:PORT, e.g. 127.0.0.1:2575")
    text = file.read_bytes().replace(b"\x0b", b"").replace(b"\x1c", b"").replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages = [m.strip(b"\r") for m in re.split(rb"\r(?=MSH\|)", b"\r" + text) if m.strip(b"\r")]
    if any(not m.startswith(b"MSH") for m in messages):
        raise click.ClickException(f"{file}: a message must start with an MSH segment")
    if not messages:
        raise click.ClickException(f"{file} holds no HL7 message (none starts with MSH)")
    refused = 0
    for message in messages:
        try:
            answer = client.send(host, int(port), message + b"\r", timeout=timeout, tls=tls)
        except client.MllpError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(answer.raw.replace(b"\r", b"\n").decode("utf-8", errors="replace").rstrip())
        refused += not answer.accepted
    if refused:
        sys.exit(1)


@hl7.command("reports")
@click.argument("study_uid")
@click.pass_context
def hl7_reports(ctx: click.Context, study_uid: str) -> None:
    """The reports of a study, newest version first."""
    from imex.db.tables import studies
    from imex.reports.history import reports_for_study

    with _db(ctx).engine.connect() as conn:
        study_id = conn.execute(select(studies.c.id).where(studies.c.study_uid == study_uid)).scalar()
        if study_id is None:
            raise click.ClickException(f"no study {study_uid}")
        found = reports_for_study(conn, study_id)
    if not found:
        click.echo("no report yet")
    for r in found:
        flag = " (superseded)" if r["superseded"] else ""
        click.echo(f"report {r['id']}: {r['status']}{flag}, accession {r['accession_number']}, "
                   f"{r['observed_at'] or 'time unknown'}, {r['clinician'] or 'clinician unknown'}, "
                   f"received {r['received_at']:%Y-%m-%d %H:%M:%S}")
        click.echo("    " + r["text"].replace("\n", "\n    "))


# -- tls: the deployment's certificate authority ---------------------------------------------------

@main.group()
def tls() -> None:
    """Certificates for DICOM over TLS, MLLP over TLS and HTTPS: a small CA for this deployment."""


def _ca(ctx: click.Context):  # type: ignore[no-untyped-def]
    from imex.tls.ca import CertificateAuthority
    from imex.tls.files import TlsFiles

    return CertificateAuthority(TlsFiles.of(_load(ctx)).ca_dir)


def _tls_audit(ctx: click.Context, action: str, name: str, detail: str) -> None:
    import getpass

    from imex import audit

    with _db(ctx).engine.begin() as conn:
        audit.record(conn, action, username=f"cli:{getpass.getuser()}"[:64], object_type="certificate",
                     object_id=name, detail=detail)


@tls.command("init")
@click.option("--host", "hosts", multiple=True, help="Name or address nodes use to reach the hub (repeat "
                                                     "for several); it goes into the hub's certificate.")
@click.option("--org", default="imex", show_default=True, help="Organisation named in the CA certificate.")
@click.pass_context
def tls_init(ctx: click.Context, hosts: tuple[str, ...], org: str) -> None:
    """Create the CA and the hub's own certificate."""
    from imex.tls.ca import CaError

    ca = _ca(ctx)
    try:
        issued = ca.init(list(hosts) or ["localhost"], organisation=org)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    _tls_audit(ctx, "tls.init", issued.name, f"CA created; hub certificate for {', '.join(issued.hosts)}")
    click.echo(f"CA certificate: {ca.ca_cert_path} (give it to every node)")
    click.echo(f"CA key: {ca.ca_key_path} (keep it here; back it up offline)")
    click.echo(f"hub certificate: {ca.cert_path(issued.name)}, expires {issued.not_after[:10]}")


@tls.command("issue")
@click.argument("name")
@click.option("--host", "hosts", multiple=True, help="Name or address in the certificate (default: the "
                                                     "registered node's host).")
@click.option("--days", default=397, show_default=True, type=click.IntRange(1, 3650), help="Validity.")
@click.pass_context
def tls_issue(ctx: click.Context, name: str, hosts: tuple[str, ...], days: int) -> None:
    """Issue a key and certificate to node NAME (or renew "hub"); an earlier one of NAME is revoked."""
    from imex.tls.ca import CaError

    names = list(hosts)
    if not names:
        with _db(ctx).session() as s:
            node = s.scalar(select(Node).where(Node.name == name))
            names = [node.host] if node is not None else []
    ca = _ca(ctx)
    try:
        issued = ca.issue(name, names, days=days)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    _tls_audit(ctx, "tls.issue", name, f"serial {issued.serial:x}, expires {issued.not_after[:10]}")
    click.echo(f"certificate: {ca.cert_path(name)}")
    click.echo(f"private key: {ca.key_path(name)} (give it to the node only, then delete it here)")
    click.echo(f"CA certificate: {ca.ca_cert_path}")
    click.echo(f"expires {issued.not_after[:10]}; SHA-256 fingerprint {issued.fingerprint}")


@tls.command("revoke")
@click.argument("name")
@click.pass_context
def tls_revoke(ctx: click.Context, name: str) -> None:
    """Revoke NAME's certificate: the hub refuses it from the next connection on."""
    from imex.tls.ca import CaError

    try:
        revoked = _ca(ctx).revoke(name)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    for row in revoked:
        _tls_audit(ctx, "tls.revoke", name, f"serial {row.serial:x}")
        click.echo(f"revoked {name} (serial {row.serial:x})")


@tls.command("list")
@click.pass_context
def tls_list(ctx: click.Context) -> None:
    """Certificates issued, with expiry; expiring ones are marked."""
    import datetime as dt

    config = _load(ctx)
    now = dt.datetime.now(dt.timezone.utc)
    rows = _ca(ctx).certificates()
    if not rows:
        click.echo("no certificates issued: create the CA with `imex tls init`")
    for row in rows:
        left = (row.expires - now).days
        state = ("revoked " + row.revoked_at[:10] if row.revoked_at else "EXPIRED" if left < 0 else
                 f"EXPIRING in {left} days" if left <= config["tls.expiry_warning_days"] else "valid")
        click.echo(f"{row.name:24} expires {row.not_after[:10]}  {state:24} serial {row.serial:x}")


@tls.command("crl")
@click.pass_context
def tls_crl(ctx: click.Context) -> None:
    """Re-sign the certificate revocation list (the hub also does it before it lapses)."""
    from imex.tls.ca import CaError

    try:
        click.echo(f"wrote {_ca(ctx).write_crl()}")
    except CaError as exc:
        raise click.ClickException(str(exc)) from None


@tls.command("require")
@click.argument("node_name")
@click.option("--off", is_flag=True, help="Allow plain TCP again.")
@click.pass_context
def tls_require(ctx: click.Context, node_name: str, off: bool) -> None:
    """Make NODE_NAME use DICOM over TLS only: it must call the TLS port with its certificate, and the hub
    sends to it over TLS."""
    with _db(ctx).session() as s:
        node = s.scalar(select(Node).where(Node.name == node_name))
        if node is None:
            raise click.ClickException(f"no node named {node_name}")
        node.tls = not off
    _tls_audit(ctx, "tls.require", node_name, "plain TCP allowed" if off else "TLS required")
    click.echo(f"node {node_name}: {'plain TCP allowed' if off else 'DICOM over TLS only'}")



# -- export: a study as a file-set (DICOMDIR) -------------------------------------------------------------

@main.command("export")
@click.argument("study_uid")
@click.argument("target", type=click.Path(path_type=Path))
@click.pass_context
def export_study(ctx: click.Context, study_uid: str, target: Path) -> None:
    """Write the study STUDY_UID with a DICOMDIR to TARGET: a zip when it ends in .zip, else a folder.
    The instances are written exactly as stored; the export is audited."""
    import getpass

    from imex import audit
    from imex.export import study_members, write_folder, write_zip
    from imex.store import BlobStore

    config = _load(ctx)
    store = BlobStore(config.store_path, fsync=False)
    with _db(ctx).session() as s:
        study = s.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise click.ClickException(f"no study {study_uid} in the index")
        members = study_members(s, store, study.id)
        if not members:
            raise click.ClickException(f"study {study_uid} has no stored instances")
        if target.suffix.lower() == ".zip":
            count = write_zip(members, target)
        else:
            if target.exists() and any(target.iterdir()):
                raise click.ClickException(f"{target} is not empty; give an empty or new folder, or a .zip")
            count = write_folder(members, target)
        audit.record(s, "study.export", username=f"cli:{getpass.getuser()}"[:64], study_uid=study_uid,
                     object_type="study", object_id=study.id, detail=f"{count} instances with DICOMDIR to {target}")
    click.echo(f"wrote {count} instances and a DICOMDIR to {target}")


# -- the patient imaging locator --------------------------------------------------------------------------


@main.group()
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
def locator_sweep(ctx: click.Context, node_name: str, off: bool, interval: int | None, lookback: int | None,
                  rate: int | None, run_now: bool) -> None:
    """Sweep NODE_NAME (a PACS that allows query/retrieve) for the locator, e.g.
    `imex locator sweep RJZ_PACS --interval 60 --lookback 730 --rate 20`."""
    from imex.locator.sweep import SweepError, configure, run_node

    try:
        sweep = configure(_db(ctx), node_name, enabled=not off, interval_minutes=interval, lookback_days=lookback,
                          queries_per_minute=rate)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{node_name}: {'not swept' if off else 'swept'} every {sweep.interval_minutes} min, "
               f"{sweep.lookback_days} days back, at most {sweep.queries_per_minute} queries/min")
    if run_now and not off:
        run = run_node(_db(ctx), _load(ctx), sweep.node_id)
        if run.error:
            raise click.ClickException(f"sweep failed (tried again later by the hub): {run.error}")
        click.echo(f"{run.queries} queries, {run.studies} studies, {run.indexed} indexed, up to {run.swept_to}")


@locator.command("discover")
@click.argument("ods")
@click.option("--mode", type=click.Choice(["none", "everyone", "restricted"]), required=True,
              help="Who may find the institution's holdings.")
@click.option("--partner", "partners", multiple=True, help="ODS code of a partner institution (restricted).")
@click.option("--network", "networks", multiple=True, help="Name of a network (restricted).")
@click.pass_context
def locator_discover(ctx: click.Context, ods: str, mode: str, partners: tuple[str, ...],
                     networks: tuple[str, ...]) -> None:
    """Set who may find ODS's holdings, e.g. `imex locator discover RJZ --mode restricted --network Stroke`."""
    from imex import audit
    from imex.db.models import Institution
    from imex.locator import policy

    with _db(ctx).session() as s:
        inst = s.scalar(select(Institution).where(Institution.ods_code == ods.upper()))
        if inst is None:
            raise click.ClickException(f"no institution has the ODS code {ods!r}")
        try:
            result = policy.set_policy(s, inst.id, mode, partners=list(partners), networks=list(networks), actor="cli")
        except policy.PolicyError as exc:
            raise click.ClickException(str(exc)) from None
        audit.record(s, "locator.discoverability", username="cli", object_type="institution", object_id=inst.ods_code,
                     detail=f"{mode}; partners {', '.join(result.partners) or '-'}; networks "
                            f"{', '.join(result.networks) or '-'}")
    click.echo(f"{result.ods}: {result.mode}; partners {', '.join(result.partners) or '-'}; networks "
               f"{', '.join(result.networks) or '-'}")


@locator.command("network")
@click.argument("name")
@click.option("--member", "members", multiple=True, help="ODS code of a member institution.")
@click.option("--description", default="", help="What the network is for.")
@click.pass_context
def locator_network(ctx: click.Context, name: str, members: tuple[str, ...], description: str) -> None:
    """Create or replace a network, e.g. `imex locator network "North stroke" --member RJZ --member RYJ`."""
    from imex.locator import policy

    with _db(ctx).session() as s:
        try:
            listed = policy.set_network(s, name, list(members), description)
        except policy.PolicyError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"network {name}: {', '.join(listed) or '(no members)'}")


@locator.command("status")
@click.pass_context
def locator_status(ctx: click.Context) -> None:
    """Entries by institution and source, and each sweep's progress."""
    from imex.db.models import Institution, Node
    from imex.db.models_locator import LocatorEntry, LocatorSweep

    with _db(ctx).session() as s:
        for ods, source, count in s.execute(select(Institution.ods_code, LocatorEntry.source, func.count())
                                            .join(Institution, Institution.id == LocatorEntry.institution_id)
                                            .group_by(Institution.ods_code, LocatorEntry.source)
                                            .order_by(Institution.ods_code)):
            click.echo(f"{ods:8} {source:6} {count} studies")
        for sweep, node in s.execute(select(LocatorSweep, Node).join(Node, Node.id == LocatorSweep.node_id)
                                     .order_by(Node.name)):
            click.echo(f"sweep {node.name}: {'on' if sweep.enabled else 'off'}, up to {sweep.swept_to or '-'}, next "
                       f"{sweep.next_run_at:%Y-%m-%d %H:%M}" + (f", failing: {sweep.last_error}" if sweep.last_error
                                                                 else ""))

if __name__ == "__main__":
    main()
