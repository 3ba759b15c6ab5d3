"""The job engine on its own, on SQLite and on PostgreSQL: claims (one winner, also between two processes),
leases and their reaping, backoff and dead letters, queues held by their due time, schedules without a
state, and the operator's requeue. A table of its own, so nothing else of the hub is involved."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, select, update

from imex.db import Database, utcnow
from imex.jobs import engine, stats
from imex.jobs.queue import JobQueue, RetryPolicy, RetrySettings

META = MetaData()
JOBS = Table(
    "test_jobs",
    META,
    Column("id", Integer, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, default=0),
    Column("attempts", Integer, default=0),
    Column("next_attempt_at", DateTime),
    Column("claimed_by", String(128)),
    Column("lease_until", DateTime),
    Column("last_error", Text),
    Column("done_by", String(128)),
)
BY_STATE = JobQueue(
    "test-by-state",
    JOBS,
    RetrySettings(10.0, 2.0, 35.0, 3),
    running_state="running",
    order=lambda t: [t.c.priority.desc(), t.c.id],
)
BY_DUE_TIME = JobQueue("test-by-due-time", JOBS, RetrySettings(5.0, 3.0, 100.0, 2))
SCHEDULE = JobQueue(
    "test-schedule",
    JOBS,
    RetrySettings(60.0),
    state_column=None,
    due_state="scheduled",
    dead_state=None,
    attempts_column=None,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    META.create_all(database.engine)
    yield database
    database.dispose()


def add(db: Database, n: int, state: str = "pending", **values: object) -> list[int]:
    with db.engine.begin() as conn:
        return [
            int(
                conn.execute(
                    insert(JOBS).values(state=state, next_attempt_at=utcnow(), **values).returning(JOBS.c.id)
                ).scalar_one()
            )
            for _ in range(n)
        ]


def row(db: Database, job_id: int):  # type: ignore[no-untyped-def]
    with db.engine.connect() as conn:
        return conn.execute(select(JOBS).where(JOBS.c.id == job_id)).one()


def test_policy_backoff_and_cap() -> None:
    policy = RetryPolicy(10.0, 2.0, 35.0, 3)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [10.0, 20.0, 35.0, 35.0]
    assert not policy.exhausted(2) and policy.exhausted(3)
    assert RetryPolicy(5.0, 1.0, 100.0).delay(9) == 5.0
    assert not RetryPolicy(5.0).exhausted(10_000)


def test_claim_takes_each_job_once_in_order(db: Database) -> None:
    low, high = add(db, 1, priority=0)[0], add(db, 1, priority=5)[0]
    first = engine.claim(db, BY_STATE, "w1", 30)
    assert [r.id for r in first] == [high]
    assert first[0].state == "running" and first[0].claimed_by == "w1" and first[0].attempts == 1
    assert [r.id for r in engine.claim(db, BY_STATE, "w2", 30)] == [low]
    assert engine.claim(db, BY_STATE, "w3", 30) == []


def test_admit_refuses_a_candidate(db: Database) -> None:
    a, b = add(db, 2)
    claimed = engine.claim(db, BY_STATE, "w1", 30, admit=lambda conn, r: r.id != a)
    assert [r.id for r in claimed] == [b]
    assert row(db, a).state == "pending" and row(db, a).attempts == 0


def test_finish_only_while_owned(db: Database) -> None:
    (job,) = add(db, 1)
    engine.claim(db, BY_STATE, "w1", 30)
    with db.engine.begin() as conn:
        assert not engine.finish(conn, BY_STATE, job, "w2", "done")  # someone else's
        assert engine.finish(conn, BY_STATE, job, "w1", "done", done_by="w1")
    r = row(db, job)
    assert (r.state, r.claimed_by, r.lease_until, r.done_by) == ("done", None, None, "w1")


def test_retry_later_backs_off_then_dead_letters(db: Database) -> None:
    (job,) = add(db, 1)
    policy = BY_STATE.policy(None)
    assert policy is not None
    delays = []
    for attempt in (1, 2, 3):
        with db.engine.begin() as conn:  # make it due now, whatever the last backoff said
            conn.execute(update(JOBS).where(JOBS.c.id == job).values(next_attempt_at=utcnow()))
        (claimed,) = engine.claim(db, BY_STATE, "w", 30)
        assert claimed.attempts == attempt
        with db.engine.begin() as conn:
            outcome = engine.retry_later(conn, BY_STATE, job, "w", f"refused {attempt}", policy)
        assert outcome is not None and outcome.attempts == attempt
        delays.append(outcome.delay)
        if outcome.dead:
            break
        r = row(db, job)
        assert r.state == "pending" and r.claimed_by is None and r.last_error == f"refused {attempt}"
        assert 0 < (r.next_attempt_at - utcnow()).total_seconds() <= outcome.delay
    assert delays == [10.0, 20.0, 0.0]
    r = row(db, job)
    assert r.state == "failed" and r.last_error == "refused 3"
    assert engine.claim(db, BY_STATE, "w", 30) == []
    # the operator's retry: due now, attempts from zero; only a dead job can be requeued
    assert engine.requeue(db, BY_STATE, job)
    assert not engine.requeue(db, BY_STATE, job)
    assert row(db, job).attempts == 0
    assert [r.id for r in engine.claim(db, BY_STATE, "w", 30)] == [job]


def test_give_up_at_once(db: Database) -> None:
    (job,) = add(db, 1)
    engine.claim(db, BY_STATE, "w", 30)
    with db.engine.begin() as conn:
        outcome = engine.retry_later(conn, BY_STATE, job, "w", "5xx: will not change", RetryPolicy(1.0), give_up=True)
    assert outcome is not None and outcome.dead and row(db, job).state == "failed"


def test_release_does_not_count_the_attempt(db: Database) -> None:
    (job,) = add(db, 1)
    engine.claim(db, BY_STATE, "w", 30)
    with db.engine.begin() as conn:
        assert engine.release(conn, BY_STATE, job, "w")
    r = row(db, job)
    assert (r.state, r.attempts, r.claimed_by) == ("pending", 0, None)


def test_expired_lease_is_reaped_and_taken_over(db: Database) -> None:
    a, b = add(db, 2)
    engine.claim(db, BY_STATE, "dead-worker", 0.2, limit=2)
    engine.claim(db, BY_STATE, "other", 30)  # nothing left to take
    assert engine.reap(db, BY_STATE) == 0  # leases still running
    time.sleep(0.4)
    seen: list[int] = []
    assert (
        engine.reap(
            db, BY_STATE, on_reaped=lambda conn, r: seen.append(r.id), values=lambda: dict(last_error="taken back")
        )
        == 2
    )
    assert sorted(seen) == [a, b]
    assert {row(db, j).state for j in (a, b)} == {"pending"}
    assert row(db, a).last_error == "taken back"
    assert sorted(r.id for r in engine.claim(db, BY_STATE, "heir", 30, limit=5)) == [a, b]
    # the dead worker, were it to come back, owns nothing any more
    with db.engine.begin() as conn:
        assert not engine.finish(conn, BY_STATE, a, "dead-worker", "done")


def test_heartbeat_keeps_the_lease(db: Database) -> None:
    (job,) = add(db, 1)
    engine.claim(db, BY_STATE, "w", 0.3)
    with engine.Heartbeat(db, BY_STATE, job, "w", 0.3):
        time.sleep(0.8)
        assert engine.reap(db, BY_STATE) == 0
    assert row(db, job).lease_until > utcnow()


def test_hold_by_due_time(db: Database) -> None:
    (job,) = add(db, 1)
    (claimed,) = engine.claim(db, BY_DUE_TIME, "w1", 60)
    assert claimed.state == "pending" and claimed.attempts == 1
    assert claimed.next_attempt_at > utcnow() + dt.timedelta(seconds=50)
    assert engine.claim(db, BY_DUE_TIME, "w2", 60) == []  # held: not due
    assert engine.reap(db, BY_DUE_TIME) == 0  # nothing to reap: it falls due by itself
    with db.engine.begin() as conn:
        outcome = engine.retry_later(conn, BY_DUE_TIME, job, None, "down", RetryPolicy(5.0, 3.0, 100.0, 2))
    assert outcome is not None and not outcome.dead and outcome.delay == 5.0
    with db.engine.begin() as conn:  # a worker that died: its hold ran out
        conn.execute(update(JOBS).where(JOBS.c.id == job).values(next_attempt_at=utcnow()))
    (again,) = engine.claim(db, BY_DUE_TIME, "w2", 60)
    assert again.attempts == 2
    with db.engine.begin() as conn:
        assert engine.finish(conn, BY_DUE_TIME, job, None, "sent")
        assert not engine.finish(conn, BY_DUE_TIME, job, None, "sent")  # not waiting any more
    assert row(db, job).state == "sent"


def test_schedule_without_state(db: Database) -> None:
    a, b = add(db, 2, state="-")
    with db.engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == b).values(next_attempt_at=utcnow() + dt.timedelta(hours=1)))
    claimed = engine.claim(db, SCHEDULE, "w", 120, limit=10)
    assert [r.id for r in claimed] == [a]
    assert row(db, a).attempts == 0  # a schedule counts its failures itself
    assert engine.claim(db, SCHEDULE, "w", 120, limit=10) == []


def test_stats(db: Database) -> None:
    a, b, c = add(db, 3)
    add(db, 1, state="failed")
    engine.claim(db, BY_STATE, "w", 30)
    with db.engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == c).values(attempts=2))
        s = stats.read(conn, BY_STATE)
        text = stats.prometheus_text(conn, [BY_STATE])
    assert s.by_state == {"pending": 2, "running": 1, "failed": 1}
    assert (s.due, s.running, s.dead, s.retrying) == (2, 1, 1, 1)
    assert 'imex_jobs{queue="test-by-state",state="pending"} 2' in text
    assert 'imex_jobs_dead{queue="test-by-state"} 1' in text


def _claim_all(url: str, worker: str, out: str) -> None:
    """In another process: claim one job at a time until none is left, noting each."""
    database = Database(url)
    taken = []
    while True:
        rows = engine.claim(database, BY_STATE, worker, 60)
        if not rows:
            break
        taken.append(rows[0].id)
        with database.engine.begin() as conn:
            engine.finish(conn, BY_STATE, rows[0].id, worker, "done", done_by=worker)
    Path(out).write_text(",".join(map(str, taken)))
    database.dispose()


def test_two_processes_never_claim_the_same_job(db: Database, tmp_path: Path) -> None:
    jobs = add(db, 120)
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"w{i}.txt" for i in range(2)]
    procs = [ctx.Process(target=_claim_all, args=(db.url, f"w{i}", str(outs[i]))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    taken = [[int(x) for x in o.read_text().split(",") if x] for o in outs]
    assert sorted(taken[0] + taken[1]) == sorted(jobs)  # every job once, none twice
    with db.engine.connect() as conn:
        done = dict(conn.execute(select(JOBS.c.id, JOBS.c.done_by)).all())
    for i, ids in enumerate(taken):
        assert all(done[j] == f"w{i}" for j in ids)
