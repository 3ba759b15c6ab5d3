"""E-mail alerts through a real SMTP server (aiosmtpd): delivered studies tell the destination, transfers
that fail for good tell the source, and an alert survives the mail server being down.

Alerts must never carry patient identifiers: the study is named by accession number, date and modality.
"""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import peers
from hubtools import transfer_states, wait_until
from imex.db.models import Email, Transfer
from imex.directory import add_institution, add_node
from imex.samples import make_study

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

PATIENT = {"patient_id": "PID7734519", "patient_name": "PRIVATE^JANET^Q", "birth_date": "19610203"}
SECRETS = ("PID7734519", "PRIVATE", "JANET", "19610203")


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    body: str
    raw: str


class Collector:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Mail] = []
        self.lock = threading.Lock()
        self.refuse: set[str] = set()  # recipients answered with 550
        self.refused: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse:
            with self.lock:
                self.refused.append(address)
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = (
            envelope.content.decode("utf-8", errors="replace")
            if isinstance(envelope.content, bytes)
            else str(envelope.content)
        )
        msg = email.message_from_string(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        with self.lock:
            self.messages.append(
                Mail(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    str(msg["Subject"]),
                    body.get_content() if body is not None else "",
                    raw,
                )
            )
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[Mail]:
        with self.lock:
            return list(self.messages)


class SmtpServer:
    """A real SMTP server on 127.0.0.1, stoppable and restartable on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.collector = Collector()
        self.controller: Any = None

    def start(self) -> SmtpServer:
        self.controller = aiosmtpd_controller.Controller(self.collector, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Mail]:
        return self.collector.snapshot()


@pytest.fixture
def smtp_server():  # type: ignore[no-untyped-def]
    servers: list[SmtpServer] = []

    def make(start: bool = True) -> SmtpServer:
        server = SmtpServer(peers.free_port())
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


def _config(make_config, smtp_port: int, **overrides: Any):  # type: ignore[no-untyped-def]
    # retry quickly after the mail server was down (the production default is 30 s)
    return make_config(
        smtp__host="127.0.0.1", smtp__port=smtp_port, smtp__timeout=5.0, smtp__retry_initial_seconds=0.5, **overrides
    )


def _hospitals(hub, dest_port: int) -> None:  # type: ignore[no-untyped-def]
    add_institution(hub.db, "RJZ", "King's College Hospital", contact_email="pacs@kings.test")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare", contact_email="pacs@imperial.test")
    add_node(hub.db, "KINGS_PACS", "STORESCU", "127.0.0.1", 11112, "RJZ", destination=False)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", dest_port, "RYJ", contact_email="radiology@imperial.test")
    hub.nodes.invalidate()


def _outbox(hub) -> list[Email]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return list(s.scalars(select(Email).order_by(Email.id)))


def _assert_no_patient_data(mail: Mail) -> None:
    for secret in SECRETS:
        assert secret not in mail.raw, f"patient identifier {secret!r} in the e-mail:\n{mail.raw}"


def _send_study(hub, tmp_path: Path, accession: str, n: int = 3) -> list[Path]:  # type: ignore[no-untyped-def]
    files = make_study(tmp_path / accession, instances_per_series=n, accession=accession, **PATIENT)
    result = peers.storescu(files, hub.listener.port, "RYJ", "STORESCU")
    assert result.statuses == [0] * n, result.output[-2000:]
    return files


def test_delivered_study_mails_the_destination_contact(make_config, start_hub, storescp, smtp_server, tmp_path):
    smtp = smtp_server()
    dest = storescp("RYJPACS")
    hub = start_hub(_config(make_config, smtp.port, smtp__sender="imex@hub.test"))
    _hospitals(hub, dest.port)

    _send_study(hub, tmp_path, "ACCMAIL01")

    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery")
    wait_until(lambda: smtp.messages, message="an e-mail")
    wait_until(lambda: all(e.state == "sent" for e in _outbox(hub)), message="outbox sent")
    mails = smtp.messages
    assert len(mails) == 1, [m.recipients for m in mails]
    mail = mails[0]
    assert mail.recipients == ["radiology@imperial.test"]  # the node's contact before the institution's
    assert mail.sender == "imex@hub.test"
    assert "King's College Hospital" in mail.subject and "RJZ" in mail.subject
    assert "ACCMAIL01" in mail.body
    assert "3 images" in mail.body and "IMPERIAL_PACS" in mail.body
    _assert_no_patient_data(mail)


def test_delivered_study_mails_the_institution_when_the_node_has_no_contact(
    make_config, start_hub, storescp, smtp_server, tmp_path
):
    smtp = smtp_server()
    dest = storescp("RYJPACS")
    hub = start_hub(_config(make_config, smtp.port))
    _hospitals(hub, dest.port)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", dest.port, "RYJ", update=True)  # no contact

    _send_study(hub, tmp_path, "ACCMAIL02", n=2)

    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    wait_until(lambda: smtp.messages, message="an e-mail")
    wait_until(lambda: all(e.state == "sent" for e in _outbox(hub)), message="outbox sent")
    assert [m.recipients for m in smtp.messages] == [["pacs@imperial.test"]]
    assert "ACCMAIL02" in smtp.messages[0].body
    _assert_no_patient_data(smtp.messages[0])


def test_transfer_failed_for_good_mails_the_source(make_config, start_hub, smtp_server, tmp_path):
    smtp = smtp_server()
    down_port = peers.free_port()  # Imperial's PACS is down
    hub = start_hub(_config(make_config, smtp.port, delivery__max_attempts=2))
    _hospitals(hub, down_port)

    _send_study(hub, tmp_path, "ACCFAIL01", n=2)

    wait_until(lambda: transfer_states(hub) == [("failed", 0, 2)], message="transfer failed")
    wait_until(lambda: smtp.messages, message="an e-mail")
    wait_until(lambda: all(e.state == "sent" for e in _outbox(hub)), message="outbox sent")
    with hub.db.session() as s:
        tid = s.scalars(select(Transfer.id)).one()
    mails = smtp.messages
    assert len(mails) == 1, [(m.recipients, m.subject) for m in mails]
    mail = mails[0]
    assert mail.recipients == ["pacs@kings.test"]
    assert "failed" in mail.subject.lower() and "Imperial College Healthcare" in mail.subject
    assert "could not be delivered" in mail.body and "after 2 attempts" in mail.body
    assert f"imex transfers retry {tid}" in mail.body
    assert f"127.0.0.1:{down_port}" in mail.body  # the last error says where it could not connect
    assert "ACCFAIL01" in mail.body
    _assert_no_patient_data(mail)


def test_alert_waits_in_outbox_while_smtp_is_down(make_config, start_hub, storescp, smtp_server, tmp_path):
    smtp = smtp_server(start=False)  # the mail server is down when the alert is due
    dest = storescp("RYJPACS")
    hub = start_hub(_config(make_config, smtp.port))
    _hospitals(hub, dest.port)

    _send_study(hub, tmp_path, "ACCDOWN01", n=2)

    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    outbox = wait_until(
        lambda: [e for e in _outbox(hub) if e.attempts >= 1] and _outbox(hub),
        message="a failed attempt to send the alert",
    )
    assert len(outbox) == 1
    assert outbox[0].state == "pending"
    assert outbox[0].recipient == "radiology@imperial.test"
    assert outbox[0].last_error

    smtp.start()
    wait_until(lambda: smtp.messages, timeout=20, message="the alert once the mail server is up")
    wait_until(lambda: [e.state for e in _outbox(hub)] == ["sent"], message="outbox sent")
    mails = smtp.messages
    assert len(mails) == 1
    assert mails[0].recipients == ["radiology@imperial.test"]
    assert "ACCDOWN01" in mails[0].body
    _assert_no_patient_data(mails[0])
    sent = _outbox(hub)[0]
    assert sent.attempts >= 2 and sent.last_error is None and sent.sent_at is not None


def test_refused_recipient_fails_at_once_and_does_not_block_others(
    make_config, start_hub, storescp, smtp_server, tmp_path
):
    smtp = smtp_server()
    smtp.collector.refuse.add("radiology@imperial.test")  # the destination node's contact does not exist
    dest = storescp("RYJPACS")
    hub = start_hub(_config(make_config, smtp.port))
    _hospitals(hub, dest.port)

    _send_study(hub, tmp_path, "ACCREF01", n=2)
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    refused = wait_until(lambda: [e for e in _outbox(hub) if e.state == "failed"], message="refused mail failed")
    assert len(refused) == 1 and refused[0].attempts == 1
    assert "550" in refused[0].last_error

    # the mail server is fine: another alert goes out, and the refused one is not tried again
    add_node(
        hub.db,
        "IMPERIAL_PACS",
        "RYJPACS",
        "127.0.0.1",
        dest.port,
        "RYJ",
        contact_email="pacs-team@imperial.test",
        update=True,
    )
    _send_study(hub, tmp_path, "ACCREF02", n=1)
    wait_until(lambda: smtp.messages, message="the second alert")
    assert [m.recipients for m in smtp.messages] == [["pacs-team@imperial.test"]]
    assert "ACCREF02" in smtp.messages[0].body
    assert smtp.collector.refused == ["radiology@imperial.test"]
