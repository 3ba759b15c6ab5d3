"""`imex serve --demo`: everything the hub does, on one machine, within seconds of the first command.

Beside the hub, in the same process, it runs what a hospital network would provide: King's PACS (a
Query/Retrieve SCP over a folder of realistic sample studies, `pacs.py`), Imperial's PACS (stores what the
hub delivers), one RIS for both (HL7 over MLLP, `ris.py`) and a mail catcher (SMTP, `mail.py`, read on the
portal's /demo/mail page). It registers them, makes a user for each role, pushes the sample studies from
King's to Imperial with their reports once (DATA_DIR/demo-state.json remembers), and prints a banner
saying where everything is."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imex import samples
from imex.demo.mail import MailCatcher
from imex.demo.pacs import DemoPacs
from imex.demo.ris import DemoRis, Report
from imex.dicom.push import PushReport, collect, push
from imex.directory import DirectoryError, add_institution, add_node
from imex.hl7.client import MllpError

log = logging.getLogger("imex.demo")

SENDER_AET = "KINGSPACS"
RECEIVER_AET = "IMPERIALPACS"
MAIL_PAGE = "/demo/mail"
STATE_FILE = "demo-state.json"  # what the first run pushed: a restart does not push again
USERS_FILE = "demo-users.txt"
KINGS_FOLDER = "demo-pacs-kings"
IMPERIAL_FOLDER = "demo-pacs-imperial"
RIS_FOLDER = "demo-ris"
SMTP_PORT = 2525  # the mail catcher's port when free (else any free one)


@dataclass(frozen=True)
class DemoUser:
    username: str
    ods: str
    roles: tuple[str, ...]
    email: str
    shows: str  # what signing in as them shows, for the banner


DEMO_USERS = (
    DemoUser(
        "admin",
        "RJZ",
        ("system_admin",),
        "admin@hub.demo",
        "hub administrator: every institution, nodes, users, queues",
    ),
    DemoUser(
        "kings",
        "RJZ",
        ("institution_admin", "auditor"),
        "pacs.manager@kings.demo",
        "King's PACS manager: outgoing transfers, PACS search, quarantine, users",
    ),
    DemoUser(
        "radiographer",
        "RJZ",
        ("sender",),
        "radiographer@kings.demo",
        "King's radiographer: searches King's PACS, sends studies, answers image requests",
    ),
    DemoUser(
        "governance",
        "RJZ",
        ("auditor",),
        "ig.lead@kings.demo",
        "King's information-governance lead: the audit trail and its export",
    ),
    DemoUser(
        "imperial",
        "RYJ",
        ("viewer", "pacs_guardian"),
        "radiologist@imperial.demo",
        "Imperial radiologist: what arrived, its images and reports",
    ),
    DemoUser(
        "clinician",
        "RYJ",
        ("sender",),
        "clinician@imperial.demo",
        "Imperial clinician: asks King's for a patient's images (requests), the locator",
    ),
    DemoUser(
        "guardian",
        "RYJ",
        ("pacs_guardian",),
        "pacs.guardian@imperial.demo",
        "Imperial PACS guardian: imports shared studies into Imperial's PACS",
    ),
)

# The demo patient: a hospital number at King's, and an NHS number (from the 999 test range) as Other
# Patient ID, so the locator and image requests can find them by NHS number and date of birth.
PATIENT = {"patient_id": "DEMO0001", "patient_name": "DEMO^ALEX", "birth_date": "19700101", "sex": "F"}
NHS_NUMBER = "9990000018"


@dataclass(frozen=True)
class Sample:
    """One study on King's demo PACS; `pushed` ones go to Imperial on the first run, with their report."""

    accession: str
    label: str
    make: Callable[..., list[Path]]
    options: dict[str, Any]
    pushed: bool
    report: tuple[str, ...] = ()
    status: str = "F"


SAMPLES = (
    Sample(
        "RJZDEMO1",
        "CT chest and abdomen",
        samples.make_body_ct,
        {"description": "CT CHEST ABDOMEN (demo)"},
        True,
        (
            "CT chest and abdomen without contrast.",
            "Findings: clear lungs. Normal heart size. Liver, kidneys and spine unremarkable.",
            "Opinion: no acute abnormality.",
        ),
    ),
    Sample(
        "RJZDEMO2",
        "MR head (T1, T2, FLAIR)",
        samples.make_head_mr,
        {"description": "MR HEAD (demo)"},
        True,
        ("MR head.", "Findings: normal grey and white matter. Ventricles of normal size.", "Opinion: normal study."),
    ),
    Sample(
        "RJZDEMO3",
        "ultrasound echocardiogram (cine)",
        samples.make_us_cine,
        {"description": "US ECHOCARDIOGRAM (demo)"},
        True,
        ("Transthoracic echocardiogram.", "Preliminary: good left ventricular function; awaiting Doppler review."),
        "P",
    ),
    Sample(
        "RJZDEMO0",
        "prior CT chest and abdomen, a year old",
        samples.make_body_ct,
        {"description": "CT CHEST ABDOMEN (prior, demo)", "slices": 20},
        False,
    ),
)


def _free(port: int, avoid: set[int]) -> bool:
    if port in avoid or not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers bind: a port whose last connections of a previous run linger in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, avoid: set[int]) -> int:
    """`preferred` when it is free (stable addresses to point tools at), else one the system picks."""
    if _free(preferred, avoid):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def ensure_demo_users(db, data_dir: Path) -> dict[str, str]:
    """Create the demo users that do not exist yet, with random passwords kept (owner-only) in
    DATA_DIR/demo-users.txt so every later demo run can print them again."""
    from sqlalchemy import select

    from imex.auth.accounts import add_user, institution_by_ods
    from imex.db.models import User

    saved = data_dir / USERS_FILE
    known: dict[str, str] = {}
    if saved.exists():
        known = dict(line.split(" ", 1) for line in saved.read_text().splitlines() if " " in line)
    with db.sessions() as s:
        for user in DEMO_USERS:
            if s.scalar(select(User.id).where(User.username == user.username)) is not None:
                continue  # made by an earlier run (its password is in the file) or by someone else
            password = "demo-" + secrets.token_urlsafe(9)
            add_user(
                s,
                username=user.username,
                institution=institution_by_ods(s, user.ods),
                password=password,
                roles=list(user.roles),
                email=user.email,
            )
            known[user.username] = password
        s.commit()
    saved.write_text("".join(f"{u} {p}\n" for u, p in known.items()))
    saved.chmod(0o600)
    return known


def _make_kings_pacs(folder: Path) -> None:
    """Write the sample studies into King's PACS folder once, whole (made aside, then renamed)."""
    if folder.exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".demo-pacs-", dir=folder.parent))
    try:
        year_ago = (dt.date.today() - dt.timedelta(days=365)).strftime("%Y%m%d")
        for sample in SAMPLES:
            sample.make(
                scratch / sample.accession,
                accession=sample.accession,
                study_date=None if sample.pushed else year_ago,
                extra={"OtherPatientIDs": NHS_NUMBER},
                **PATIENT,
                **sample.options,
            )
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _register(hub, ports: dict[str, int]) -> None:
    """The demo hospitals, their nodes and RIS endpoints (idempotent: a restart updates the ports)."""
    from imex.reports.endpoints import add_ris

    db = hub.db
    for ods, name, contact in (
        ("RJZ", "King's College Hospital (demo)", "pacs@kings.demo"),
        ("RYJ", "Imperial College Healthcare (demo)", "pacs@imperial.demo"),
    ):
        add_institution(db, ods, name, contact_email=contact, update=True)
    try:
        add_node(
            db,
            "KINGS_PACS",
            SENDER_AET,
            "127.0.0.1",
            ports["kings"],
            "RJZ",
            destination=False,
            query_retrieve=True,
            update=True,
        )
        add_node(db, "IMPERIAL_PACS", RECEIVER_AET, "127.0.0.1", ports["imperial"], "RYJ", update=True)
        add_node(
            db,
            "CD_IMPORT",
            hub.config["send.calling_aet"],
            "127.0.0.1",
            hub.config["dicom.port"] + 3,
            "RJZ",
            destination=False,
            update=True,
        )
        for name, ods, application in (("KINGS_RIS", "RJZ", "CRIS"), ("IMPERIAL_RIS", "RYJ", "RADIS")):
            add_ris(
                db,
                name,
                ods,
                host="127.0.0.1",
                port=ports["ris"],
                facilities=[ods],
                peer_host="127.0.0.1",
                receiving_application=application,
            )
    except DirectoryError as exc:
        log.warning("demo nodes not added: %s", exc)
    hub.nodes.invalidate()


def _share_with_each_other(db) -> None:
    """First run only: King's and Imperial find each other's holdings in the locator, and King's PACS is
    swept for it; what an administrator changed later is left alone."""
    from sqlalchemy import select

    from imex.db.models import Institution, LocatorPolicy, LocatorSweep, Node
    from imex.locator import policy, sweep

    with db.sessions() as s:
        ids = dict(s.execute(select(Institution.ods_code, Institution.id)).tuples().all())
        for ods, partner in (("RJZ", "RYJ"), ("RYJ", "RJZ")):
            if s.scalar(select(LocatorPolicy.id).where(LocatorPolicy.institution_id == ids[ods])) is None:
                policy.set_policy(s, ids[ods], "restricted", partners=[partner], actor="demo")
        s.commit()
        swept = s.scalar(
            select(LocatorSweep.id).join(Node, Node.id == LocatorSweep.node_id).where(Node.name == "KINGS_PACS")
        )
    if swept is None:
        sweep.configure(db, "KINGS_PACS", interval_minutes=60, lookback_days=730, queries_per_minute=600)


@dataclass
class DemoRun:
    """The demo's peers, and what the first run pushed (`state`, from DATA_DIR/demo-state.json)."""

    data_dir: Path
    kings: DemoPacs
    imperial: DemoPacs
    ris: DemoRis
    mail: MailCatcher
    users: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    pushed_now: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    def push_sample(self, hub) -> None:
        """First run only: push the sample studies from King's PACS to Imperial (called AE title RYJ, an
        alias), then send their reports from King's RIS; remembered in DATA_DIR so a restart does not."""
        if self.state.get("pushed_at"):
            return
        pushed = []
        with ExitStack() as scratch:
            for sample in SAMPLES:
                if not sample.pushed:
                    continue
                report = PushReport()
                files = collect([self.kings.folder.root / sample.accession], scratch, report)
                push(
                    files,
                    host="127.0.0.1",
                    port=hub.listener.port,
                    called_aet="RYJ",
                    calling_aet=SENDER_AET,
                    report=report,
                )
                if report.failed or not report.sent:
                    self.problems.append(f"{sample.label}: {len(report.failed)} of {len(files)} instances not pushed")
                pushed.append({"accession": sample.accession, "label": sample.label, "instances": report.sent})
        pushed_whole = not self.problems
        reports = self._send_reports(hub)  # a report that fails is told in the banner, not pushed again with them
        if pushed_whole:
            self.state = {
                "pushed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "studies": pushed,
                "reports": reports,
            }
            self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")
            self.pushed_now = True

    def _send_reports(self, hub) -> int:
        """Each pushed study's report, from King's RIS to the hub's MLLP listener; the hub attaches it to the
        study and forwards it with the delivery (to Imperial's RIS and, as an SR, to Imperial's PACS)."""
        port = hub.reports.port
        if not port:
            self.problems.append("no reports sent: the hub's HL7 listener is off (hl7.port = 0)")
            return 0
        sent = 0
        study_uids = self._study_uids()
        for sample in SAMPLES:
            if not (sample.pushed and sample.report):
                continue
            report = Report(
                control=f"{sample.accession}R1",
                facility="RJZ",
                patient_id=PATIENT["patient_id"],
                nhs_number=NHS_NUMBER,
                patient_name=PATIENT["patient_name"],
                birth_date=PATIENT["birth_date"],
                sex=PATIENT["sex"],
                accession=sample.accession,
                study_uid=study_uids.get(sample.accession, ""),
                procedure=str(sample.options["description"]).replace(" (demo)", ""),
                clinician="4567^HALL^ROBERT",
                lines=sample.report,
                status=sample.status,
            )
            try:
                answer = self.ris.send(report, "127.0.0.1", port)
            except MllpError as exc:
                self.problems.append(f"report {sample.accession} not sent: {exc}")
                continue
            if answer.accepted:
                sent += 1
            else:
                self.problems.append(f"report {sample.accession} refused: {answer.code} {answer.text}")
        return sent

    def _study_uids(self) -> dict[str, str]:
        return {
            str(h.header.get("AccessionNumber", "")): str(h.header.StudyInstanceUID)
            for h in self.kings.folder.instances()
        }

    def banner(self, hub) -> str:
        c = hub.config
        http = f"http://127.0.0.1:{c['http.port']}"
        data = c.data_dir
        studies = ", ".join(f"{s.label} ({s.accession})" for s in SAMPLES if s.pushed)
        if self.pushed_now:
            sample_lines = [
                f"  samples  pushed now from King's (RJZ) to Imperial (RYJ), with their reports: {studies}",
            ]
        elif self.state.get("pushed_at"):
            sample_lines = [
                f"  samples  pushed on the first run ({self.state['pushed_at']}): {studies};",
                f"           not pushed again (delete {self.state_path} to push them again)",
            ]
        else:
            sample_lines = [f"  samples  not pushed whole: {studies} (the next start tries again)"]
        if self.problems:
            sample_lines.append("           problems: " + "; ".join(self.problems))
        prior = next(s for s in SAMPLES if not s.pushed)
        return "\n".join(
            [
                "",
                "imex demo hub is running",
                f"  portal   {http}/   sign in as:",
                *[
                    f"           {u.username:12} password {self.users.get(u.username, '(see ' + USERS_FILE + ')'):22} "
                    f"{u.shows}"
                    for u in DEMO_USERS
                ],
                f"           (passwords kept in {data / USERS_FILE})",
                f"  mail     {http}{MAIL_PAGE}   the e-mail the hub sent (arrival alerts, one-time codes),",
                f"           caught by an SMTP server on 127.0.0.1:{self.mail.port}; nothing leaves this machine",
                *sample_lines,
                f"           patient {PATIENT['patient_name']}, ID {PATIENT['patient_id']}, NHS number {NHS_NUMBER}, "
                f"born {PATIENT['birth_date']}; the {prior.label} ({prior.accession})",
                "           stays on King's PACS: find it with PACS search, the locator or an image request",
                f"  PACS     King's   {SENDER_AET}@127.0.0.1:{self.kings.port}  Query/Retrieve (C-FIND, C-MOVE) "
                f"over {self.kings.folder.root}",
                f"           Imperial {RECEIVER_AET}@127.0.0.1:{self.imperial.port}  stores what the hub delivers in "
                f"{self.imperial.folder.root}",
                f"  RIS      HL7 MLLP on 127.0.0.1:{self.ris.port}: King's RIS sends the reports, Imperial's receives "
                f"them (kept in {self.ris.folder});",
                f"           the hub takes HL7 on port {hub.reports.port or '(off)'}",
                f"  DICOM    {c['dicom.ae_title']} on port {hub.listener.port} (send to AE title RYJ or RJZ to route)",
                f"  HTTP     {http}/healthz   {http}/metrics",
                f"  data     {data}",
                "Press Ctrl+C to stop.",
                "",
            ]
        )

    def stop(self) -> None:
        for peer in (self.kings, self.imperial, self.ris, self.mail):
            try:
                peer.stop()
            except Exception:  # stopping the others matters more than how one failed
                log.exception("demo: stopping %s failed", type(peer).__name__)


def prepare(hub) -> DemoRun:
    """Before the hub starts: make the sample studies, start the demo PACSes, RIS and mail catcher,
    register them (idempotent), point the hub's e-mail at the catcher and make the demo users."""
    config = hub.config
    data = config.data_dir
    data.mkdir(parents=True, exist_ok=True)
    # the mail catcher logs every SMTP command, highdicom every module of each report SR: the banner would drown
    for chatty in ("mail.log", "highdicom"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    hub_port = int(config["dicom.port"])
    avoid = {hub_port, int(config["http.port"]), int(config["hl7.port"]), hub_port + 3}
    ports: dict[str, int] = {}
    for name, preferred in (
        ("imperial", hub_port + 1),
        ("kings", hub_port + 2),
        ("smtp", SMTP_PORT),
        ("ris", (int(config["hl7.port"]) or 2575) + 1),
    ):
        ports[name] = pick_port(preferred, avoid)
        avoid.add(ports[name])
    # the hub's e-mail goes to the catcher (read when each message is sent, so set before the hub starts)
    config.values.update(
        {
            "smtp.host": "127.0.0.1",
            "smtp.port": ports["smtp"],
            "smtp.starttls": False,
            "smtp.username": "",
            "smtp.password": "",
            "smtp.sender": "imex@hub.demo",
        }
    )
    _make_kings_pacs(data / KINGS_FOLDER)

    def destinations(ae_title: str) -> tuple[str, int] | None:
        """Where King's PACS may C-MOVE to: the hub (by its AE title) and Imperial's PACS."""
        known = {config["dicom.ae_title"]: hub.listener.port or hub_port, RECEIVER_AET: ports["imperial"]}
        port = known.get(ae_title)
        return ("127.0.0.1", int(port)) if port else None

    kings = DemoPacs(SENDER_AET, data / KINGS_FOLDER, ports["kings"], destinations)
    imperial = DemoPacs(RECEIVER_AET, data / IMPERIAL_FOLDER, ports["imperial"], destinations)
    ris = DemoRis(data / RIS_FOLDER, ports["ris"])
    mail = MailCatcher(data, ports["smtp"])
    run = DemoRun(data, kings, imperial, ris, mail)
    started: list[Any] = []
    try:
        for peer in (kings, imperial, ris, mail):
            peer.start()
            started.append(peer)
    except Exception:
        for peer in started:
            peer.stop()
        raise
    _register(hub, {**ports, "kings": kings.port, "imperial": imperial.port, "ris": ris.port})
    run.users = ensure_demo_users(hub.db, data)
    _share_with_each_other(hub.db)
    state = data / STATE_FILE
    if state.exists():
        try:
            run.state = json.loads(state.read_text())
        except ValueError:
            log.warning("demo: %s is not JSON; the samples will be pushed again", state)
    hub.demo = run  # the portal's /demo/mail page is served only when this is set
    return run
