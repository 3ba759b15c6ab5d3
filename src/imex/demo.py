"""`imex serve --demo`: two demo hospitals, a demo destination PACS, and a sample CT study pushed through
the hub, so a new user sees a whole delivery within seconds of starting."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time, unseen by mypy

from imex import samples
from imex.dicom import net
from imex.dicom.push import PushReport, collect, push
from imex.dicom.syntaxes import ACCEPTED
from imex.directory import DirectoryError, add_institution, add_node

log = logging.getLogger("imex.demo")

SENDER_AET = "KINGSPACS"
RECEIVER_AET = "IMPERIALPACS"


# demo sign-ins: (user name, institution, roles, what they show)
DEMO_USERS = (
    ("admin", "RJZ", ["system_admin"], "hub administrator: every institution, nodes, users, audit"),
    ("kings", "RJZ", ["institution_admin", "auditor"], "King's PACS manager: sends, quarantine, audit"),
    ("imperial", "RYJ", ["viewer", "pacs_guardian"], "Imperial radiologist: sees what arrived"),
)


def ensure_demo_users(db, data_dir: Path) -> dict[str, str]:
    """Create the demo users once with random passwords, kept (owner-only) in DATA_DIR/demo-users.txt so
    every later demo run can print them again."""
    import secrets

    from sqlalchemy import select

    from imex.auth.accounts import add_user, institution_by_ods
    from imex.db.models import User

    saved = data_dir / "demo-users.txt"
    known: dict[str, str] = {}
    if saved.exists():
        known = dict(line.split(" ", 1) for line in saved.read_text().splitlines() if " " in line)
    with db.sessions() as s:
        for username, ods, roles, _ in DEMO_USERS:
            if s.scalar(select(User.id).where(User.username == username)) is not None and username in known:
                continue
            if s.scalar(select(User.id).where(User.username == username)) is not None:
                continue  # made by someone else: leave it alone
            password = "demo-" + secrets.token_urlsafe(9)
            add_user(s, username=username, institution=institution_by_ods(s, ods), password=password, roles=roles)
            known[username] = password
        s.commit()
    saved.write_text("".join(f"{u} {p}\n" for u, p in known.items()))
    saved.chmod(0o600)
    return known


@dataclass
class DemoRun:
    pacs_dir: Path
    pacs_port: int
    server: object
    pushed: int = 0
    users: dict[str, str] | None = None

    def push_sample(self, hub) -> None:
        """Push a 24-slice CT from King's demo PACS to Imperial (called AE title RYJ: an alias)."""
        from contextlib import ExitStack

        with tempfile.TemporaryDirectory(prefix="imex-demo-") as folder, ExitStack() as scratch:
            samples.make_study(
                Path(folder),
                series=2,
                instances_per_series=12,
                rows=256,
                columns=256,
                patient_id="DEMO0001",
                patient_name="DEMO^PATIENT",
                accession="RJZDEMO1",
                description="CT HEAD (demo)",
            )
            report = PushReport()
            files = collect([Path(folder)], scratch, report)
            push(
                files, host="127.0.0.1", port=hub.listener.port, called_aet="RYJ", calling_aet=SENDER_AET, report=report
            )
            self.pushed = report.sent

    def banner(self, hub) -> str:
        c = hub.config
        return "\n".join(
            [
                "",
                "imex demo hub is running",
                f"  DICOM   {c['dicom.ae_title']} on port {hub.listener.port} (send to AE title RYJ or RJZ to route)",
                f"  HTTP    http://127.0.0.1:{c['http.port']}/healthz   http://127.0.0.1:{c['http.port']}/metrics",
                f"  data    {c.data_dir}",
                f"  sample  {self.pushed} CT instances pushed from King's (RJZ) to Imperial (RYJ); the demo PACS at",
                f"          {RECEIVER_AET}@127.0.0.1:{self.pacs_port} stores them in {self.pacs_dir}",
                f"  portal  http://127.0.0.1:{c['http.port']}/   sign in as:",
                *[
                    f"          {u:9} password {(self.users or {}).get(u, '(set before; see demo-users.txt)'):22} {what}"
                    for u, _, _, what in DEMO_USERS
                ],
                f"          (kept in {c.data_dir / 'demo-users.txt'})",
                "Press Ctrl+C to stop.",
                "",
            ]
        )

    def stop(self) -> None:
        self.server.shutdown()  # type: ignore[attr-defined]


def _start_demo_pacs(folder: Path, port: int):
    """A minimal destination PACS that writes what it receives to files, standing in for Imperial's."""
    net.install()
    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event) -> int:
        ds: Dataset = event.dataset
        (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title=RECEIVER_AET)
    ae.add_supported_context(Verification)
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax is not None:  # always set on pynetdicom's predefined contexts
            ae.add_supported_context(cx.abstract_syntax, list(ACCEPTED))
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def prepare(hub) -> DemoRun:
    """Register the demo institutions and nodes (idempotent) and start the demo PACS."""
    db = hub.db
    pacs_port = hub.config["dicom.port"] + 1
    for ods, name, email in (
        ("RJZ", "King's College Hospital (demo)", "pacs@kings.demo"),
        ("RYJ", "Imperial College Healthcare (demo)", "pacs@imperial.demo"),
    ):
        add_institution(db, ods, name, contact_email=email, update=True)
    try:
        add_node(db, "KINGS_PACS", SENDER_AET, "127.0.0.1", pacs_port + 1, "RJZ", destination=False, update=True)
        add_node(db, "IMPERIAL_PACS", RECEIVER_AET, "127.0.0.1", pacs_port, "RYJ", update=True)
        add_node(
            db,
            "CD_IMPORT",
            hub.config["send.calling_aet"],
            "127.0.0.1",
            pacs_port + 2,
            "RJZ",
            destination=False,
            update=True,
        )
    except DirectoryError as exc:
        log.warning("demo nodes not added: %s", exc)
    hub.nodes.invalidate()
    folder = hub.config.data_dir / "demo-pacs"
    server = _start_demo_pacs(folder, pacs_port)
    return DemoRun(folder, pacs_port, server, users=ensure_demo_users(db, hub.config.data_dir))
