"""Asking the source RIS for a report that has not arrived: a study routed more than
`hl7.retrieve_after_seconds` ago without a report, from an institution whose RIS endpoint has a
query_template, gets a query (by default QRY^R02 by accession number); an answer that carries the report
(ORF^R04 or ORU) is stored like a pushed one. Unanswered queries are retried every
`hl7.retrieve_interval_seconds`, up to `hl7.retrieve_max_attempts` times."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.tables import institutions, patients, report_queries, reports, ris_endpoints, studies
from imex.hl7 import build, client
from imex.reports import receive as store

log = logging.getLogger("imex.reports.query")

# Only studies received this recently are considered, so the scan stays small however large the index grows.
WINDOW = dt.timedelta(days=14)


def schedule(db: Database, config: Config, limit: int = 100) -> int:
    """Create a query for each routed study that still has no report and whose RIS can be asked."""
    cutoff = utcnow() - dt.timedelta(seconds=config["hl7.retrieve_after_seconds"])
    with db.reader() as conn:  # looking must not take SQLite's write lock from ingest
        ids = conn.execute(
            select(studies.c.id).join(ris_endpoints, ris_endpoints.c.institution_id == studies.c.institution_id)
            .where(studies.c.route_state == "routed", studies.c.accession_number != "",
                   studies.c.last_received_at <= cutoff, studies.c.last_received_at >= utcnow() - WINDOW,
                   ris_endpoints.c.query_template != "",
                   ris_endpoints.c.port > 0, ris_endpoints.c.enabled.is_(True),
                   ~select(reports.c.id).where(reports.c.study_id == studies.c.id).exists(),
                   ~select(report_queries.c.id).where(report_queries.c.study_id == studies.c.id).exists())
            .distinct().limit(limit)).scalars().all()
        conn.rollback()
    if not ids:
        return 0
    insert = postgresql.insert if db.is_postgres else sqlite.insert
    with db.engine.begin() as conn:
        for study_id in ids:
            conn.execute(insert(report_queries).values(study_id=study_id, state="pending", attempts=0,
                                                       next_attempt_at=utcnow(), created_at=utcnow())
                         .on_conflict_do_nothing())
    return len(ids)


def query_due(db: Database, config: Config, limit: int = 20) -> int:
    """Send the due queries; returns how many found their report."""
    now = utcnow()
    with db.reader() as conn:
        anything = conn.execute(select(report_queries.c.id).where(
            report_queries.c.state == "pending", report_queries.c.next_attempt_at <= now).limit(1)).first()
        conn.rollback()
    if anything is None:
        return 0
    query = (select(report_queries.c.id, report_queries.c.attempts, studies.c.id.label("study_id"),
                    studies.c.accession_number, studies.c.institution_id, patients.c.patient_id,
                    institutions.c.ods_code)
             .join(studies, studies.c.id == report_queries.c.study_id)
             .join(patients, patients.c.id == studies.c.patient_pk)
             .join(institutions, institutions.c.id == studies.c.institution_id)
             .where(report_queries.c.state == "pending", report_queries.c.next_attempt_at <= now).limit(limit))
    if db.is_postgres:  # several hubs: each query is sent by one of them
        query = query.with_for_update(of=report_queries, skip_locked=True)
    with db.engine.begin() as conn:
        due = conn.execute(query).all()
        for q in due:
            conn.execute(update(report_queries).where(report_queries.c.id == q.id).values(
                next_attempt_at=now + dt.timedelta(seconds=config["hl7.retrieve_interval_seconds"])))
    found = 0
    for q in due:
        if _ask(db, config, q):
            found += 1
    return found


def _ask(db: Database, config: Config, q) -> bool:  # type: ignore[no-untyped-def]
    attempts = q.attempts + 1
    with db.reader() as conn:
        endpoint = conn.execute(select(ris_endpoints).where(
            ris_endpoints.c.institution_id == q.institution_id, ris_endpoints.c.query_template != "",
            ris_endpoints.c.port > 0, ris_endpoints.c.enabled.is_(True)).order_by(ris_endpoints.c.id).limit(1)).first()
        conn.rollback()
    state, error = "pending", None
    if endpoint is None:
        state, error = "given-up", "the institution's RIS no longer answers queries"
    else:
        message = build.query(endpoint.query_template, ris_name=endpoint.receiving_application, ods=q.ods_code,
                              accession=q.accession_number, patient_id=q.patient_id)
        try:
            answer = client.send(endpoint.host, endpoint.port, message, timeout=config["hl7.send_timeout"])
            outcome = store.receive(db, answer.raw, endpoint.host, source="query",
                                    expected_institution=q.institution_id)
            if outcome.code == "AA" and outcome.report_id is not None:
                state = "found"
            else:
                error = f"no report in the answer: {outcome.text or answer.text}"
        except client.MllpError as exc:
            error = str(exc)
    if state == "pending" and attempts >= config["hl7.retrieve_max_attempts"]:
        state = "given-up"
    with db.engine.begin() as conn:
        conn.execute(update(report_queries).where(report_queries.c.id == q.id).values(
            state=state, attempts=attempts, last_error=error))
    if error:
        log.info("report query for study %s (attempt %s): %s", q.study_id, attempts, error)
    return state == "found"


def run_once(db: Database, config: Config) -> None:
    schedule(db, config)
    query_due(db, config)
