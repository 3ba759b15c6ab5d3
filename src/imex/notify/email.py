"""E-mail alerts through an outbox: the alert is written in the same transaction as the event it reports,
then a sender thread delivers it over SMTP and retries while the mail server is down. No patient
identifiers go into e-mail: the study is named by its accession number, date and modality only.

A message's body is kept only until it is sent or given up: some carry secrets (an outside recipient's
link address, a one-time code), so the outbox then keeps the recipient, subject and dates, and the body
is replaced by a note (REDACTED, GIVEN_UP).
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import threading
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Connection, insert, select, update

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import emails, instances, institutions, nodes, studies, transfers
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetrySettings
from imex.jobs.registry import register
from imex.notify import wording

log = logging.getLogger("imex.notify")


# Retries while the mail server is down double from smtp.retry_initial_seconds up to smtp.retry_max_seconds,
# so an alert goes out within minutes of the server coming back; one still unsent after a day is given up.
GIVE_UP_AFTER = dt.timedelta(hours=24)
# Errors that concern one message (a refused recipient, sender or content), as opposed to the mail server
# being unreachable or refusing the session, after which the rest of the batch waits for the next round.
# (smtplib's exceptions are OSErrors too.)
MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)
# How long a sender holds the messages it took (several are sent one after the other on one connection).
HOLD_SECONDS = 300.0
# What replaces a body once it is no longer needed (it may have held a link address or a one-time code).
REDACTED = "(sent; the body is not kept: it may have held a link address or a one-time code)"
GIVEN_UP = "(not sent; the body is not kept: it may have held a link address or a one-time code)"

EMAIL = register(
    JobQueue(
        "email",
        emails,
        RetrySettings("smtp.retry_initial_seconds", "smtp.retry_multiplier", "smtp.retry_max_seconds"),
        description="E-mail alerts waiting for the SMTP server (given up after a day, or on a 5xx refusal).",
    )
)


def queue_email(conn: Connection, recipients: list[str], subject: str, body: str) -> None:
    for recipient in dict.fromkeys(r.strip() for r in recipients if r and r.strip()):
        conn.execute(
            insert(emails).values(
                recipient=recipient,
                subject=subject,
                body=body,
                state="pending",
                attempts=0,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
        )


def transfer_parties(conn: Connection, transfer_id: int) -> tuple[Any, Any, Any, Any]:
    """(transfer, study, destination node with its institution, source institution) of a transfer: what
    every alert about a transfer names."""
    t = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).one()
    study = conn.execute(select(studies).where(studies.c.id == t.study_id)).one()
    dest = conn.execute(
        select(
            nodes.c.name,
            nodes.c.ae_title,
            nodes.c.contact_email,
            nodes.c.institution_id,
            institutions.c.name.label("inst"),
            institutions.c.ods_code,
            institutions.c.contact_email.label("inst_email"),
        )
        .join(institutions)
        .where(nodes.c.id == t.destination_node_id)
    ).one()
    source = conn.execute(
        select(institutions.c.name, institutions.c.ods_code, institutions.c.contact_email).where(
            institutions.c.id == study.institution_id
        )
    ).one()
    return t, study, dest, source


def queue_transfer_alert(conn: Connection, transfer_id: int, *, delivered: bool) -> None:
    """Tell the destination that a study arrived, or the source that one could not be delivered."""
    t, study, dest, source = transfer_parties(conn, transfer_id)
    what = (
        f"{wording.study(study.modalities, study.study_date)}, accession {study.accession_number or '(none)'}, "
        f"{wording.count(study.num_instances, 'image')}"
    )
    if delivered:
        recipients = [dest.contact_email or dest.inst_email or ""]
        subject = f"[imex] Images received from {source.name} ({source.ods_code})"
        body = (
            f"A {what} from {source.name} ({source.ods_code}) has been delivered to your node "
            f"{dest.name} ({dest.ae_title}).\n\nTransfer {t.id}: {t.instances_sent} instances delivered at "
            f"{t.delivered_at or utcnow():%Y-%m-%d %H:%M} UTC.\n"
        )
    else:
        source_node_ids = (
            conn.execute(select(instances.c.source_node_id).distinct().where(instances.c.study_id == study.id))
            .scalars()
            .all()
        )
        node_emails = (
            conn.execute(
                select(nodes.c.contact_email).where(nodes.c.id.in_([n for n in source_node_ids if n is not None]))
            )
            .scalars()
            .all()
        )
        recipients = [*node_emails, source.contact_email or ""]
        subject = f"[imex] Transfer to {dest.inst} ({dest.ods_code}) failed"
        body = (
            f"A {what} sent by {source.name} could not be delivered to {dest.name} ({dest.ae_title}) "
            f"of {dest.inst} after {t.attempts} attempts.\n\nLast error: {t.last_error}\n\n"
            f"An administrator can retry it with `imex transfers retry {t.id}`.\n"
        )
    queue_email(conn, recipients, subject, body)


def _first_code(exc: Exception) -> int | None:
    """The SMTP reply code of a refusal (SMTPRecipientsRefused keeps them per recipient)."""
    recipients = getattr(exc, "recipients", None)
    if isinstance(recipients, dict):
        for code, _ in recipients.values():
            return int(code)
    return None


class EmailSender:
    """Sends the outbox over SMTP; a failure leaves the message for a later attempt."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.policy = EMAIL.retry_policy(config)

    @property
    def enabled(self) -> bool:
        return bool(self.config["smtp.host"])

    def _send(self, recipient: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.config["smtp.sender"]
        msg["To"] = recipient
        msg["Subject"] = subject
        msg.set_content(body)
        with smtplib.SMTP(
            self.config["smtp.host"], self.config["smtp.port"], timeout=self.config["smtp.timeout"]
        ) as smtp:
            if self.config["smtp.starttls"]:
                smtp.starttls()
            if self.config["smtp.username"]:
                smtp.login(self.config["smtp.username"], self.config["smtp.password"])
            smtp.send_message(msg)

    def send_due(self) -> int:
        """Send every due message; returns how many went out."""
        if not self.enabled:
            return 0
        # held out of other senders' reach while this one works (a sender that dies lets them fall due)
        due = engine.claim(self.db, EMAIL, "", HOLD_SECONDS, limit=50)
        sent = 0
        server_down: Exception | None = None
        for row in due:
            permanent = False
            try:
                if server_down is not None:
                    raise server_down  # do not wait for a dead server once per message
                if row.body in (REDACTED, GIVEN_UP):  # a dead letter retried after its body was removed
                    with self.db.engine.begin() as conn:
                        engine.finish(
                            conn,
                            EMAIL,
                            row.id,
                            None,
                            "failed",
                            last_error="its body was removed when it was given up; nothing to send",
                        )
                    continue
                self._send(row.recipient, row.subject, row.body)
                with self.db.engine.begin() as conn:
                    engine.finish(conn, EMAIL, row.id, None, "sent", sent_at=utcnow(), last_error=None, body=REDACTED)
                sent += 1
            except (OSError, smtplib.SMTPException) as exc:
                if isinstance(exc, MESSAGE_ERRORS):  # a 5xx answer will not change on a retry
                    code = getattr(exc, "smtp_code", None) or _first_code(exc)
                    permanent = code is not None and 500 <= code < 600
                else:
                    server_down = exc
                with self.db.engine.begin() as conn:
                    outcome = engine.retry_later(
                        conn,
                        EMAIL,
                        row.id,
                        None,
                        f"{type(exc).__name__}: {exc}"[:500],
                        self.policy,
                        give_up=permanent or utcnow() - row.created_at > GIVE_UP_AFTER,
                    )
                    if outcome is not None and outcome.dead:
                        conn.execute(update(emails).where(emails.c.id == row.id).values(body=GIVEN_UP))
                log.warning(
                    "e-mail to %s not sent (attempt %s%s): %s",
                    row.recipient,
                    row.attempts,
                    ", giving up" if outcome is not None and outcome.dead else "",
                    exc,
                )
        return sent

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.send_due()
            except Exception:
                log.exception("e-mail sender error; continuing")
            stop.wait(interval)
