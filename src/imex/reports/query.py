"""Asking the source RIS for a report that has not arrived: a study routed more than
`hl7.retrieve_after_seconds` ago without a report, from an institution whose RIS endpoint has a
query_template, gets a query (by default QRY^R02 by accession number); an answer that carries the report
(ORF^R04 or ORU) is stored like a pushed one. Unanswered queries are retried every
`hl7.retrieve_interval_seconds`, up to `hl7.retrieve_max_attempts` times."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import institutions, patients, report_queries, reports, ris_endpoints, studies
from imex.hl7 import build, client
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetryPolicy, RetrySettings
from imex.jobs.registry import register
from imex.reports import receive as store

log = logging.getLogger("imex.reports.query")

QUERY = register(
    JobQueue(
        "report-query",
        report_queries,
        RetrySettings(
            "hl7.retrieve_interval_seconds",
            "hl7.retrieve_multiplier",
            "hl7.retrieve_max_interval_seconds",
            "hl7.retrieve_max_attempts",
        ),
        dead_state="given-up",
        description="Queries asking a source RIS for a report that has not arrived.",
    )
)

# Only studies received this recently are considered, so the scan stays small however large the index grows.
WINDOW = dt.timedelta(days=14)


def schedule(db: Database, config: Config, limit: int = 100) -> int:
    """Create a query for each routed study that still has no report and whose RIS can be asked."""
    cutoff = utcnow() - dt.timedelta(seconds=config["hl7.retrieve_after_seconds"])
    with db.reader() as conn:  # looking must not take SQLite's write lock from ingest
        ids = (
            conn.execute(
                select(studies.c.id)
                .join(ris_endpoints, ris_endpoints.c.institution_id == studies.c.institution_id)
                .where(
                    studies.c.route_state == "routed",
                    studies.c.accession_number != "",
                    studies.c.last_received_at <= cutoff,
                    studies.c.last_received_at >= utcnow() - WINDOW,
                    ris_endpoints.c.query_template != "",
                    ris_endpoints.c.port > 0,
                    ris_endpoints.c.enabled.is_(True),
                    ~select(reports.c.id).where(reports.c.study_id == studies.c.id).exists(),
                    ~select(report_queries.c.id).where(report_queries.c.study_id == studies.c.id).exists(),
                )
                .distinct()
                .limit(limit)
            )
            .scalars()
            .all()
        )
        conn.rollback()
    if not ids:
        return 0
    insert = postgresql.insert if db.is_postgres else sqlite.insert
    with db.engine.begin() as conn:
        for study_id in ids:
            conn.execute(
                insert(report_queries)
                .values(study_id=study_id, state="pending", attempts=0, next_attempt_at=utcnow(), created_at=utcnow())
                .on_conflict_do_nothing()
            )
    return len(ids)


def query_due(db: Database, config: Config, limit: int = 20) -> int:
    """Send the due queries; returns how many found their report."""
    hold = max(config["hl7.send_timeout"] * 4, 60)  # each query is sent by one process (several hubs)
    claimed = engine.claim(db, QUERY, "", hold, limit=limit)
    if not claimed:
        return 0
    with db.reader() as conn:
        due = conn.execute(
            select(
                report_queries.c.id,
                report_queries.c.attempts,
                studies.c.id.label("study_id"),
                studies.c.accession_number,
                studies.c.institution_id,
                patients.c.patient_id,
                institutions.c.ods_code,
            )
            .join(studies, studies.c.id == report_queries.c.study_id)
            .join(patients, patients.c.id == studies.c.patient_pk)
            .join(institutions, institutions.c.id == studies.c.institution_id)
            .where(report_queries.c.id.in_([q.id for q in claimed]))
            .order_by(report_queries.c.id)
        ).all()
        conn.rollback()
    policy = QUERY.retry_policy(config)
    return sum(1 for q in due if _ask(db, config, q, policy))


def _ask(db: Database, config: Config, q, policy: RetryPolicy) -> bool:
    with db.reader() as conn:
        endpoint = conn.execute(
            select(ris_endpoints)
            .where(
                ris_endpoints.c.institution_id == q.institution_id,
                ris_endpoints.c.query_template != "",
                ris_endpoints.c.port > 0,
                ris_endpoints.c.enabled.is_(True),
            )
            .order_by(ris_endpoints.c.id)
            .limit(1)
        ).first()
        conn.rollback()
    found, error = False, ""
    if endpoint is None:
        error = "the institution's RIS no longer answers queries"
    else:
        message = build.query(
            endpoint.query_template,
            ris_name=endpoint.receiving_application,
            ods=q.ods_code,
            accession=q.accession_number,
            patient_id=q.patient_id,
        )
        try:
            answer = client.send(endpoint.host, endpoint.port, message, timeout=config["hl7.send_timeout"])
            outcome = store.receive(
                db, answer.raw, endpoint.host, source="query", expected_institution=q.institution_id
            )
            if outcome.code == "AA" and outcome.report_id is not None:
                found = True
            else:
                error = f"no report in the answer: {outcome.text or answer.text}"
        except client.MllpError as exc:
            error = str(exc)
    with db.engine.begin() as conn:
        if found:
            engine.finish(conn, QUERY, q.id, None, "found", last_error=None)
        else:
            engine.retry_later(conn, QUERY, q.id, None, error, policy, give_up=endpoint is None)
    if error:
        log.info("report query for study %s (attempt %s): %s", q.study_id, q.attempts, error)
    return found


def run_once(db: Database, config: Config) -> None:
    schedule(db, config)
    query_due(db, config)
