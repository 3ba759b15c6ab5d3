"""The outbox keeps an e-mail's body only until it is sent or given up: link addresses and one-time codes
must not stay in the database. Recipient, subject and dates are kept for the operators."""

from __future__ import annotations

import email
import email.policy
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import peers
from imex.config import load
from imex.db import Database
from imex.db.models import emails
from imex.notify.email import GIVEN_UP, REDACTED, EmailSender, queue_email

controller_module = pytest.importorskip("aiosmtpd.controller")

CODE_MAIL = "Your one-time code is 493817\n\nEnter it on the page where you asked for it.\n"
LINK_MAIL = "Open them here:\nhttps://hub.example/l/imex_SECRETLINKTOKEN\n"


class Inbox:
    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.bodies.append(msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n"))  # type: ignore[union-attr]
        return "250 OK"


@pytest.fixture
def outbox(tmp_path: Path):  # type: ignore[no-untyped-def]
    inbox = Inbox()
    controller = controller_module.Controller(inbox, hostname="127.0.0.1", port=peers.free_port())
    controller.start()
    db = Database(f"sqlite:///{tmp_path / 'imex.db'}")
    db.migrate()
    config = load(path=None, env={}).with_values(
        smtp__host="127.0.0.1", smtp__port=controller.port, smtp__timeout=5.0, data_dir=str(tmp_path)
    )
    yield db, EmailSender(config, db), inbox
    controller.stop()
    db.dispose()


def _rows(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(select(emails).order_by(emails.c.id)))


def test_a_sent_body_is_replaced_by_a_note(outbox) -> None:  # type: ignore[no-untyped-def]
    db, sender, inbox = outbox
    with db.engine.begin() as conn:
        queue_email(conn, ["pat@outside.example"], "[imex] Your code to open shared images", CODE_MAIL)
        queue_email(conn, ["pat@outside.example"], "[imex] King's has shared images with you", LINK_MAIL)
    assert [r.body for r in _rows(db)] == [CODE_MAIL, LINK_MAIL]  # kept while it waits to be sent
    assert sender.send_due() == 2
    assert sorted(inbox.bodies) == sorted([CODE_MAIL, LINK_MAIL])  # the recipient got the whole message
    rows = _rows(db)
    assert [(r.state, r.recipient, r.body) for r in rows] == [("sent", "pat@outside.example", REDACTED)] * 2
    assert [r.subject for r in rows] == [
        "[imex] Your code to open shared images",
        "[imex] King's has shared images with you",
    ]
    assert all(r.sent_at is not None for r in rows)
    text = " ".join(" ".join(map(str, r)) for r in rows)
    assert "493817" not in text and "SECRETLINKTOKEN" not in text


def test_a_given_up_body_is_replaced_too_and_never_sent_as_a_note(outbox) -> None:  # type: ignore[no-untyped-def]
    from imex.jobs import operate

    db, sender, inbox = outbox
    inbox.refuse.add("gone@outside.example")
    with db.engine.begin() as conn:
        queue_email(conn, ["gone@outside.example"], "[imex] Your code to open shared images", CODE_MAIL)
    assert sender.send_due() == 0
    [row] = _rows(db)
    assert (row.state, row.body) == ("failed", GIVEN_UP) and "550" in row.last_error
    # an operator retries the dead letter: there is nothing left to send, so it is given up again, unsent
    inbox.refuse.clear()
    operate.retry(db, "email", row.id)
    assert sender.send_due() == 0
    [row] = _rows(db)
    assert row.state == "failed" and "removed" in row.last_error and inbox.bodies == []
