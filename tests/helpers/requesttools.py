"""Helpers for the image request tests: a real SMTP server (aiosmtpd) collecting mail, and two
hospitals whose PACS are Orthanc instances: King's (RJZ) is asked for images, Imperial (RYJ) asks."""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

import peers
from imex.db.models import ImageRequest
from imex.directory import add_institution, add_node

NHS = "9434765919"  # valid modulus 11
OTHER_NHS = "9434765870"


@dataclass
class Mail:
    recipients: list[str]
    subject: str
    body: str


class Collector:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[Mail] = []
        self.lock = threading.Lock()

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
                Mail(list(envelope.rcpt_tos), str(msg["Subject"]), body.get_content() if body is not None else "")
            )
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Mail]:
        with self.lock:
            return [m for m in self.messages if address in m.recipients]


class Smtp:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = peers.free_port()
        self.collector = Collector()
        self.controller = Controller(self.collector, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Collector:
        self.controller.start()
        return self.collector

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def smtp_config(make_config: Any, port: int, **overrides: Any) -> Any:
    return make_config(
        smtp__host="127.0.0.1",
        smtp__port=port,
        smtp__timeout=5.0,
        smtp__retry_initial_seconds=0.5,
        requests__scan_interval=0.3,
        **overrides,
    )


def hospitals(
    hub: Any,
    *,
    kings_pacs_port: int,
    imperial_pacs_port: int,
    kings_aet: str = "RJZPACS",
    imperial_aet: str = "RYJPACS",
) -> None:
    """King's PACS sends and may be queried/retrieved by the hub; Imperial's PACS receives."""
    add_institution(hub.db, "RJZ", "King's College Hospital", contact_email="pacs@kings.test")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare", contact_email="pacs@imperial.test")
    add_node(
        hub.db, "KINGS_PACS", kings_aet, "127.0.0.1", kings_pacs_port, "RJZ", destination=False, query_retrieve=True
    )
    add_node(hub.db, "IMPERIAL_PACS", imperial_aet, "127.0.0.1", imperial_pacs_port, "RYJ")
    hub.nodes.invalidate()


def orthanc(tmp: Path, aet: str, hub: Any) -> peers.Orthanc:
    return peers.Orthanc(
        tmp, aet=aet, modalities={"HUB": (hub.config["dicom.ae_title"], "127.0.0.1", hub.listener.port)}
    )


def request_state(hub: Any, request_id: int) -> str:
    with hub.db.session() as s:
        return s.scalar(select(ImageRequest.state).where(ImageRequest.id == request_id)) or ""


def no_patient_identifiers(mails: list[Mail], *secrets: str) -> None:
    for m in mails:
        for secret in secrets:
            assert secret not in m.body and secret not in m.subject, (secret, m.subject, m.body)
