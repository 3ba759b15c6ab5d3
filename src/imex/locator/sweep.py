"""Feed (b): scheduled C-FIND sweeps of participating institutions' PACS.

Each node that allows it (query_retrieve on, a sweep row enabled) is swept every `interval_minutes`, by
study date windows from where the last run got to (or `lookback_days` ago the first time), at most
`queries_per_minute` queries. Every node runs in its own thread: a PACS that answers slowly or not at all
times out, its run is retried later with backoff, and no other sweep, search or transfer waits on it.
Progress (`swept_to`) is committed after each window, so a restart resumes, never restarts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Table, select, update

from imex.config import Config
from imex.db import Database
from imex.db.models import LocatorSweep, Node, locator_entries, locator_sweeps, nodes, utcnow
from imex.dicom.query import FindFailed, NodeAddress, StudyMatch, StudyQuery, find_series, find_studies
from imex.errors import Invalid
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetrySettings
from imex.jobs.registry import register
from imex.locator.entries import Holding, nhs_number_of, upsert

log = logging.getLogger("imex.locator.sweep")
SWEEPS = locator_sweeps
ENTRIES = locator_entries


class SweepError(Invalid, ValueError):
    """A sweep setting that cannot be used; the message says what to change."""


def configure(
    db: Database,
    node_name: str,
    *,
    enabled: bool = True,
    interval_minutes: int | None = None,
    lookback_days: int | None = None,
    queries_per_minute: int | None = None,
) -> LocatorSweep:
    """Create or change the sweep of a node; the node must allow query/retrieve. Runs it soon."""
    for name, value, low, high in (
        ("interval", interval_minutes, 1, 7 * 24 * 60),
        ("lookback", lookback_days, 1, 36500),
        ("rate", queries_per_minute, 1, 6000),
    ):
        if value is not None and not low <= value <= high:
            raise SweepError(f"{name} must be between {low} and {high}")
    with db.session() as s:
        node = s.scalar(select(Node).where(Node.name == node_name))
        if node is None:
            raise SweepError(f"no node named {node_name!r}")
        if enabled and not node.query_retrieve:
            raise SweepError(f"node {node_name} does not allow query/retrieve by the hub; turn it on first")
        row = s.scalar(select(LocatorSweep).where(LocatorSweep.node_id == node.id))
        if row is None:
            row = LocatorSweep(node_id=node.id, swept_to="", attempts=0, studies_seen=0)
            s.add(row)
        row.enabled = enabled
        row.interval_minutes = interval_minutes or row.interval_minutes or 60
        row.lookback_days = lookback_days or row.lookback_days or 365
        row.queries_per_minute = queries_per_minute or row.queries_per_minute or 30
        row.next_run_at = utcnow()
        row.attempts = 0
        s.flush()
        s.expunge(row)
        return row


def _day(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except (TypeError, ValueError):
        return None


@dataclass
class Run:
    """What one run of one node's sweep did."""

    node: str
    queries: int = 0
    studies: int = 0
    indexed: int = 0
    swept_to: str = ""
    error: str | None = None


class Pacer:
    """At most `per_minute` queries: each waits for its turn, and a stop request ends the wait at once."""

    def __init__(self, per_minute: int, stop: threading.Event) -> None:
        self.gap = 60.0 / max(per_minute, 1)
        self.stop = stop
        self.next = 0.0

    def turn(self) -> None:
        import time

        wait = self.next - time.monotonic()
        if wait > 0 and self.stop.wait(wait):
            raise FindFailed("the hub is stopping")
        self.next = time.monotonic() + self.gap


def run_node(
    db: Database, config: Config, node_id: int, stop: threading.Event | None = None, today: dt.date | None = None
) -> Run:
    """Sweep one node now: windows of study dates from where it got to up to today. Records the outcome
    (next run, or the failure and when to try again) and returns it."""
    stop = stop or threading.Event()
    with db.reader() as conn:
        sweep = conn.execute(select(SWEEPS).where(SWEEPS.c.node_id == node_id)).one()
        node = conn.execute(select(nodes).where(Node.id == node_id)).one()
        conn.rollback()
    run = Run(node.name)
    address = NodeAddress(node.ae_title, node.host, node.port)
    today = today or utcnow().date()
    reached = _day(sweep.swept_to)
    start = today - dt.timedelta(days=sweep.lookback_days)
    if reached is not None:
        start = max(start, reached - dt.timedelta(days=1))  # the last day again: studies are still being added
    pacer = Pacer(sweep.queries_per_minute, stop)
    window = max(int(config["locator.sweep_window_days"]), 1)
    limit = int(config["locator.sweep_max_studies"])
    timeout = float(config["locator.sweep_timeout_seconds"])
    hub_aet = config["dicom.ae_title"]
    try:
        day = start
        while day <= today:
            end = min(day + dt.timedelta(days=window - 1), today)
            pacer.turn()
            matches = find_studies(
                hub_aet,
                address,
                StudyQuery(date_from=f"{day:%Y%m%d}", date_to=f"{end:%Y%m%d}"),
                timeout=timeout,
                limit=limit,
            )
            run.queries += 1
            if len(matches) >= limit and end > day:
                window = max(1, (end - day).days // 2)  # too many at once: narrower windows from here
                continue
            run.studies += len(matches)
            run.indexed += _index(db, config, node, address, matches, pacer, run)
            _progress(db, node_id, f"{end:%Y%m%d}")
            run.swept_to = f"{end:%Y%m%d}"
            day = end + dt.timedelta(days=1)
    except FindFailed as exc:
        run.error = str(exc)
    if stop.is_set():  # the hub is stopping: not the PACS's fault; the next start resumes from swept_to
        with db.engine.begin() as conn:
            conn.execute(update(SWEEPS).where(SWEEPS.c.node_id == node_id).values(next_run_at=utcnow()))
        return run
    _finish(db, config, node_id, sweep, run)
    return run


def _index(
    db: Database, config: Config, node, address: NodeAddress, matches: list[StudyMatch], pacer: Pacer, run: Run
) -> int:
    """Index the studies of one window that carry a valid NHS number; their series are asked for only when
    the entry is new or its instance count changed (each series query counts against the rate)."""
    indexed = 0
    timeout = float(config["locator.sweep_timeout_seconds"])
    for m in matches:
        number = nhs_number_of(m.patient_id, m.issuer, m.other_ids)
        if number is None:
            continue
        with db.reader() as conn:
            known = conn.execute(
                select(ENTRIES.c.num_instances, ENTRIES.c.series_json).where(
                    ENTRIES.c.institution_id == node.institution_id, ENTRIES.c.study_uid == m.study_uid
                )
            ).first()
            conn.rollback()
        series: list[dict] = []
        if known is None or not known.series_json or known.num_instances != m.instance_count:
            pacer.turn()
            run.queries += 1
            series = [
                {
                    "uid": s.series_uid,
                    "modality": s.modality,
                    "number": _int_or_none(s.number),
                    "description": s.description,
                    "body_part": s.body_part,
                    "instances": s.instance_count,
                }
                for s in find_series(config["dicom.ae_title"], address, m.study_uid, timeout=timeout)
            ]
        instances = m.instance_count or sum(s["instances"] for s in series)
        with db.engine.begin() as conn:
            upsert(
                conn,
                Holding(
                    institution_id=node.institution_id,
                    node_id=node.id,
                    nhs_number=number,
                    study_uid=m.study_uid,
                    source="sweep",
                    birth_date=m.birth_date,
                    patient_id=m.patient_id,
                    accession=m.accession,
                    study_date=m.study_date,
                    study_time=m.study_time,
                    modalities=m.modalities or tuple(s["modality"] for s in series),
                    description=m.description,
                    body_parts=m.body_parts or tuple(s["body_part"] for s in series),
                    num_series=m.series_count or len(series),
                    num_instances=instances,
                    series=series,
                ),
            )
        indexed += 1
    return indexed


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _progress(db: Database, node_id: int, swept_to: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(SWEEPS).where(SWEEPS.c.node_id == node_id).values(swept_to=swept_to))


def backoff(config: Config, attempts: int) -> float:
    """Seconds before a failed sweep is tried again after `attempts` failures in a row."""
    return SWEEP.retry_policy(config).delay(attempts)


def _finish(db: Database, config: Config, node_id: int, sweep, run: Run) -> None:
    now = utcnow()
    with db.engine.begin() as conn:
        if run.error is None:
            conn.execute(
                update(SWEEPS)
                .where(SWEEPS.c.node_id == node_id)
                .values(
                    attempts=0,
                    last_error=None,
                    last_run_at=now,
                    last_ok_at=now,
                    studies_seen=run.studies,
                    next_run_at=now + dt.timedelta(minutes=sweep.interval_minutes),
                )
            )
            log.info(
                "sweep of %s: %d queries, %d studies, %d indexed, up to %s",
                run.node,
                run.queries,
                run.studies,
                run.indexed,
                run.swept_to,
            )
        else:
            attempts = sweep.attempts + 1
            delay = backoff(config, attempts)
            conn.execute(
                update(SWEEPS)
                .where(SWEEPS.c.node_id == node_id)
                .values(
                    attempts=attempts,
                    last_error=run.error[:2000],
                    last_run_at=now,
                    next_run_at=now + dt.timedelta(seconds=delay),
                )
            )
            log.warning("sweep of %s failed (attempt %d, again in %.0f s): %s", run.node, attempts, delay, run.error)


def _sweepable(t: Table) -> ColumnElement[bool]:
    """A sweep runs while it is enabled and its node is enabled and may be queried."""
    return t.c.enabled.is_(True) & t.c.node_id.in_(
        select(nodes.c.id).where(nodes.c.enabled.is_(True), nodes.c.query_retrieve.is_(True))
    )


# Not a queue of one-off jobs but a schedule: every enabled sweep falls due at its next run, and a failed
# run pushes that back by the backoff (attempts count the failures in a row and never give up).
SWEEP = register(
    JobQueue(
        "locator-sweep",
        SWEEPS,
        RetrySettings(
            "locator.sweep_retry_initial_seconds", "locator.sweep_retry_multiplier", "locator.sweep_retry_max_seconds"
        ),
        state_column=None,
        due_state="scheduled",
        dead_state=None,
        due_column="next_run_at",
        attempts_column=None,
        where=_sweepable,
        description="Sweeps of institutions' PACS (C-FIND) that feed the patient imaging locator.",
    )
)


class Sweeper:
    """Starts the sweeps that are due, each in its own thread; a node's sweep never runs twice at once in
    this process, and a claim in the database keeps other processes off it."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config
        self.running: dict[int, threading.Thread] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def tick(self) -> list[int]:
        """Start every due sweep that is not running; returns the nodes started. A claim holds a sweep's
        next run back by `locator.sweep_claim_seconds`, so a sweep started by a process that died is
        started again after that."""
        started = []
        with self.lock:
            self.running = {k: t for k, t in self.running.items() if t.is_alive()}
            for row in engine.claim(
                self.db,
                SWEEP,
                "",
                float(self.config["locator.sweep_claim_seconds"]),
                limit=1000,
                scan=1000,
                admit=lambda conn, r: r.node_id not in self.running,
            ):
                thread = threading.Thread(
                    target=self._run, args=(row.node_id,), name=f"locator-sweep-{row.node_id}", daemon=True
                )
                self.running[row.node_id] = thread
                thread.start()
                started.append(row.node_id)
        return started

    def _run(self, node_id: int) -> None:
        try:
            run_node(self.db, self.config, node_id, self.stop)
        except Exception:
            log.exception("sweep of node %s failed", node_id)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop.set()
        for thread in list(self.running.values()):
            thread.join(timeout)
