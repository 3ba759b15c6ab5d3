"""The demo's mail catcher: an SMTP server on 127.0.0.1 that the demo hub sends its e-mail to, keeping
every message in DATA_DIR/demo-mail.jsonl instead of delivering it, so the arrival alerts and one-time
codes a newcomer triggers can be read on the portal's /demo/mail page. Nothing leaves the machine."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "demo-mail.jsonl"
SHOWN = 200  # the newest messages the page lists


@dataclass(frozen=True)
class Caught:
    """One message as the catcher received it."""

    at: str  # ISO time, UTC
    sender: str
    to: list[str]
    subject: str
    body: str


class Mailbox:
    """Caught messages as JSON lines in DATA_DIR: one line appended per message (so they survive a restart
    of the demo), read newest first."""

    _lock = threading.Lock()

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME

    def add(self, message: Caught) -> None:
        line = json.dumps(asdict(message), ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line)

    def messages(self, limit: int = SHOWN) -> list[Caught]:
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        caught = []
        for line in reversed(lines):
            try:
                caught.append(Caught(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut short by a crash
            if len(caught) >= limit:
                break
        return caught


class _Handler:
    """aiosmtpd handler: every message accepted is parsed and kept in the mailbox."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",))
        self.mailbox.add(
            Caught(
                at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                sender=str(envelope.mail_from or ""),
                to=[str(r) for r in envelope.rcpt_tos],
                subject=str(msg.get("Subject", "")),
                body=part.get_content() if part is not None else "",
            )
        )
        return "250 Message accepted for delivery"


class MailCatcher:
    """The SMTP server (aiosmtpd, in its own thread) on 127.0.0.1:`port`."""

    def __init__(self, data_dir: Path, port: int) -> None:
        from aiosmtpd.controller import Controller  # only the demo needs an SMTP server

        self.mailbox = Mailbox(data_dir)
        self.port = port
        self.controller = Controller(_Handler(self.mailbox), hostname="127.0.0.1", port=port)

    def start(self) -> MailCatcher:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
