"""The operators' view of the queues on a migrated database: every queue listed, dead letters shown and
retried, unknown queues and live jobs refused with typed errors, and the figures /metrics serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, select

from imex.db import Database, utcnow
from imex.db.models import emails
from imex.errors import Conflict, NotFound
from imex.jobs import operate, registry, stats


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'imex.db'}")
    database.migrate()
    return database


def _email(db: Database, state: str, attempts: int, error: str | None = None) -> int:
    with db.engine.begin() as conn:
        return int(
            conn.execute(
                insert(emails)
                .values(
                    recipient="pacs@example.nhs.uk",
                    subject="s",
                    body="b",
                    state=state,
                    attempts=attempts,
                    next_attempt_at=utcnow(),
                    created_at=utcnow(),
                    last_error=error,
                )
                .returning(emails.c.id)
            ).scalar_one()
        )


def test_every_queue_is_listed(db: Database) -> None:
    names = [s.name for s in operate.overview(db)]
    assert names == [
        "confirm",
        "delivery",
        "email",
        "locator-sweep",
        "report-forward",
        "report-query",
        "retrieve",
        "upload",
    ]
    assert all(q.description for q in registry.queues())


def test_dead_letters_are_listed_and_retried(db: Database) -> None:
    dead = _email(db, "failed", 9, "SMTPRecipientsRefused: 550 no such user")
    waiting = _email(db, "pending", 1)
    [email] = [s for s in operate.overview(db) if s.name == "email"]
    assert (email.dead, email.due, email.retrying) == (1, 1, 1)
    listed = operate.dead_jobs(db, "email")
    assert [(j.id, j.attempts, j.error) for j in listed] == [(dead, 9, "SMTPRecipientsRefused: 550 no such user")]
    with pytest.raises(Conflict):
        operate.retry(db, "email", waiting)  # not given up: nothing to retry
    operate.retry(db, "email", dead)
    with db.engine.connect() as conn:
        row = conn.execute(select(emails).where(emails.c.id == dead)).one()
    assert (row.state, row.attempts) == ("pending", 0)
    with pytest.raises(Conflict):
        operate.retry(db, "email", dead)  # already retried
    assert operate.dead_jobs(db, "email") == []


def test_retry_all_and_unknown_queue(db: Database) -> None:
    for _ in range(3):
        _email(db, "failed", 5)
    assert operate.retry_all(db, "email") == 3
    with pytest.raises(NotFound, match="no job queue 'mail'"):
        operate.dead_jobs(db, "mail")
    with pytest.raises(Conflict, match="never gives up"):
        operate.retry(db, "locator-sweep", 1)


def test_metrics_text(db: Database) -> None:
    _email(db, "failed", 5)
    with db.engine.connect() as conn:
        text = stats.prometheus_text(conn, registry.queues())
    assert 'imex_jobs_dead{queue="email"} 1' in text
    assert 'imex_jobs_due{queue="delivery"} 0' in text
