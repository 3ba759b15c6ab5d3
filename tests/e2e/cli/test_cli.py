"""The `imex` command line against a real database, a running hub and real dcmtk peers.

Most commands run through click's CliRunner (in this process, fast); a few run the installed console
script as a subprocess to check exit codes and stderr as an operator sees them. Each test writes an
imex.toml (write_toml) holding the same settings as the hub it starts, so the CLI and the hub share
the database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydicom import dcmread
from sqlalchemy import select

import peers
from hubtools import transfer_states, wait_until, write_toml
from imex.cli import main
from imex.config import SETTINGS
from imex.db.models import Study, Transfer
from imex.samples import make_study

REPO = Path(__file__).resolve().parents[3]
IMEX = Path(sys.executable).with_name("imex")


class Cli:
    """Runs `imex --config TOML ...` in this process (CliRunner) or as a real subprocess."""

    def __init__(self, toml: Path) -> None:
        self.toml = toml
        self.runner = CliRunner()

    def __call__(self, *args: Any, ok: bool = True) -> Result:
        argv = ["--config", str(self.toml), *map(str, args)]
        result = self.runner.invoke(main, argv, env={"IMEX_CONFIG": None}, catch_exceptions=True)
        if ok:
            assert result.exit_code == 0, f"imex {' '.join(argv)} failed ({result.exit_code}):\n{result.output}" + (
                f"\n{result.exc_info}" if result.exception and not isinstance(result.exception, SystemExit) else ""
            )
        else:
            assert result.exit_code != 0, f"imex {' '.join(argv)} should have failed:\n{result.output}"
            # a clear message, not a traceback
            assert isinstance(result.exception, SystemExit), f"crashed: {result.exc_info}\n{result.output}"
            assert "Traceback" not in result.output
        return result

    def run(self, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The installed console script, as an operator runs it."""
        env = dict(os.environ)
        env.pop("IMEX_CONFIG", None)
        return subprocess.run(
            [str(IMEX), "--config", str(self.toml), *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=self.toml.parent,
        )


@pytest.fixture
def setup(make_config, start_hub, tmp_path):  # type: ignore[no-untyped-def]
    """setup(hub=True, **overrides) -> (cli, hub or None, config)."""

    def build(hub: bool = True, **overrides: Any):  # type: ignore[no-untyped-def]
        config = make_config(**overrides)
        toml = write_toml(tmp_path / "imex.toml", config)
        started = start_hub(config) if hub else None
        return Cli(toml), started, config

    return build


def _hospitals(cli: Cli, hub, *, dest_port: int, source_aet: str = "STORESCU") -> None:  # type: ignore[no-untyped-def]
    """King's (RJZ) sends from source_aet at 127.0.0.1, Imperial (RYJ) receives at RYJPACS — all via the CLI."""
    cli("institution", "add", "RJZ", "King's College Hospital", "--email", "pacs@kings.test")
    cli("institution", "add", "RYJ", "Imperial College Healthcare", "--email", "pacs@imperial.test")
    cli(
        "node",
        "add",
        "KINGS_PACS",
        "--ae",
        source_aet,
        "--host",
        "127.0.0.1",
        "--port",
        11112,
        "--institution",
        "RJZ",
        "--no-destination",
    )
    cli(
        "node",
        "add",
        "IMPERIAL_PACS",
        "--ae",
        "RYJPACS",
        "--host",
        "127.0.0.1",
        "--port",
        dest_port,
        "--institution",
        "RYJ",
    )
    if hub is not None:
        hub.nodes.invalidate()


def _sop_uids(paths: list[Path]) -> list[str]:
    return sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths)


def _transfer(hub, transfer_id: int) -> Transfer:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return s.get(Transfer, transfer_id)


def _only_transfer_id(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return s.scalars(select(Transfer.id)).one()


# -- institutions and nodes ----------------------------------------------------------------------------


def test_institution_add_and_list(setup):
    cli, _, _ = setup(hub=False)

    out = cli("institution", "add", "RJZ", "King's College Hospital", "--email", "pacs@kings.test").output
    assert "added institution RJZ (King's College Hospital); alias RJZ" in out
    out = cli("institution", "add", "ryj", "Imperial College Healthcare", "--alias", "IMPERIAL").output
    assert "added institution RYJ (Imperial College Healthcare); alias IMPERIAL" in out

    listing = cli("institution", "list").output.splitlines()
    assert listing[0].split() == ["ODS", "ALIAS", "CONTACT", "NAME"]
    rows = {line.split()[0]: line for line in listing[1:]}
    assert set(rows) == {"RJZ", "RYJ"}
    assert "pacs@kings.test" in rows["RJZ"] and "King's College Hospital" in rows["RJZ"]
    assert rows["RYJ"].split()[1] == "IMPERIAL"

    assert "exists already" in cli("institution", "add", "RJZ", "Again", ok=False).output
    assert "ODS code" in cli("institution", "add", "R!", "Bad", ok=False).output
    clash = cli("institution", "add", "RRV", "UCLH", "--alias", "IMPERIAL", ok=False).output
    assert "alias IMPERIAL is already used by institution RYJ" in clash
    # nothing was added by the failed commands
    assert len(cli("institution", "list").output.splitlines()) == 3


def test_node_add_list_remove_and_errors(setup):
    cli, _, _ = setup(hub=False)
    cli("institution", "add", "RJZ", "King's College Hospital")

    out = cli(
        "node", "add", "KINGS_PACS", "--ae", "KINGSPACS", "--host", "127.0.0.1", "--port", 104, "--institution", "rjz"
    ).output
    assert "added node KINGS_PACS: KINGSPACS@127.0.0.1:104" in out
    cli(
        "node",
        "add",
        "KINGS_CT",
        "--ae",
        "KINGSCT1",
        "--host",
        "127.0.0.2",
        "--port",
        11112,
        "--institution",
        "RJZ",
        "--no-destination",
        "--alias",
        "KINGSCT",
        "--no-move",
        "--no-get",
    )

    listing = cli("node", "list").output.splitlines()
    rows = {line.split()[0]: line for line in listing[1:]}
    assert set(rows) == {"KINGS_PACS", "KINGS_CT"}
    assert rows["KINGS_PACS"].split()[1:4] == ["KINGSPACS", "127.0.0.1:104", "RJZ"]
    # query/retrieve by the node on the hub: C-FIND, C-MOVE and C-GET allowed unless turned off
    assert "Q/R BY NODE" in listing[0]
    assert rows["KINGS_PACS"].split()[4] == "find,move,get" and rows["KINGS_CT"].split()[5] == "find"
    assert rows["KINGS_PACS"].endswith("destination") and "source only" not in rows["KINGS_PACS"]
    assert "source only" in rows["KINGS_CT"] and "KINGSCT " in rows["KINGS_CT"]

    errors = {
        "unknown institution": (
            ["NEW", "--ae", "NEWAE", "--host", "h", "--port", 104, "--institution", "NOPE"],
            "no institution NOPE",
        ),
        "duplicate AE title": (
            ["NEW", "--ae", "KINGSPACS", "--host", "h", "--port", 104, "--institution", "RJZ"],
            "AE title KINGSPACS is already node KINGS_PACS",
        ),
        "AE title too long": (
            ["NEW", "--ae", "A_VERY_LONG_AE_TITLE", "--host", "h", "--port", 104, "--institution", "RJZ"],
            "must be 1-16 printable characters",
        ),
        "AE title with backslash": (
            ["NEW", "--ae", "BAD\\AE", "--host", "h", "--port", 104, "--institution", "RJZ"],
            "must be 1-16 printable characters",
        ),
        "blank AE title": (
            ["NEW", "--ae", "  ", "--host", "h", "--port", 104, "--institution", "RJZ"],
            "must be 1-16 printable characters",
        ),
        "duplicate name": (
            ["KINGS_PACS", "--ae", "OTHERAE", "--host", "h", "--port", 104, "--institution", "RJZ"],
            "node KINGS_PACS exists already",
        ),
        "bad port": (
            ["NEW", "--ae", "NEWAE", "--host", "h", "--port", 70000, "--institution", "RJZ"],
            "port 70000 must be between 1 and 65535",
        ),
        "port not a number": (
            ["NEW", "--ae", "NEWAE", "--host", "h", "--port", "abc", "--institution", "RJZ"],
            "is not a valid integer",
        ),
    }
    for what, (args, message) in errors.items():
        out = cli("node", "add", *args, ok=False).output
        assert message in out, f"{what}: {out}"
    # the failed commands changed nothing
    assert len(cli("node", "list").output.splitlines()) == 3

    cli(
        "node",
        "add",
        "KINGS_PACS",
        "--ae",
        "KINGSPACS",
        "--host",
        "127.0.0.1",
        "--port",
        104,
        "--institution",
        "RJZ",
        "--update",
        "--no-find",
        "--no-move",
        "--no-get",
    )
    out = cli(
        "node",
        "add",
        "KINGS_PACS",
        "--ae",
        "KINGSPACS",
        "--host",
        "10.0.0.9",
        "--port",
        4242,
        "--institution",
        "RJZ",
        "--update",
    ).output
    assert "updated node KINGS_PACS: KINGSPACS@10.0.0.9:4242" in out
    assert "10.0.0.9:4242" in cli("node", "list").output
    pacs_row = [line for line in cli("node", "list").output.splitlines() if line.startswith("KINGS_PACS")]
    assert pacs_row[0].split()[4] == "none"  # an --update without the flags leaves them as they were
    cli(
        "node",
        "add",
        "KINGS_PACS",
        "--ae",
        "KINGSPACS",
        "--host",
        "10.0.0.9",
        "--port",
        4242,
        "--institution",
        "RJZ",
        "--update",
        "--allow-get",
    )
    pacs_row = [line for line in cli("node", "list").output.splitlines() if line.startswith("KINGS_PACS")]
    assert pacs_row[0].split()[4] == "get"

    assert "removed node KINGS_CT" in cli("node", "remove", "KINGS_CT").output
    listing = cli("node", "list").output
    assert "KINGS_CT" not in listing and "KINGS_PACS" in listing
    assert "no node named KINGS_CT" in cli("node", "remove", "KINGS_CT", ok=False).output


def test_console_script_errors_exit_non_zero_with_message(setup):
    cli, _, _ = setup(hub=False)
    proc = cli.run("node", "add", "X", "--ae", "XAE", "--host", "127.0.0.1", "--port", 104, "--institution", "NOPE")
    assert proc.returncode == 1, proc
    assert "Error: no institution NOPE: add it first with `imex institution add`" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = cli.run("transfers", "cancel", 42)
    assert proc.returncode == 1, proc
    assert "no transfer 42" in proc.stderr

    bad = cli.toml.with_name("bad.toml")
    bad.write_text("[dicom]\nprot = 104\n")
    proc = subprocess.run([str(IMEX), "--config", str(bad), "node", "list"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "unknown setting 'dicom.prot'" in proc.stderr and "Traceback" not in proc.stderr


def test_node_echo_real_storescp_and_closed_port(setup, storescp):
    scp = storescp("RYJPACS")
    cli, _, _ = setup(hub=False)
    cli("institution", "add", "RYJ", "Imperial College Healthcare")
    cli(
        "node",
        "add",
        "IMPERIAL_PACS",
        "--ae",
        "RYJPACS",
        "--host",
        "127.0.0.1",
        "--port",
        scp.port,
        "--institution",
        "RYJ",
    )
    closed_port = peers.free_port()
    cli(
        "node",
        "add",
        "IMPERIAL_OLD",
        "--ae",
        "RYJOLD",
        "--host",
        "127.0.0.1",
        "--port",
        closed_port,
        "--institution",
        "RYJ",
    )

    out = cli("node", "echo", "IMPERIAL_PACS").output
    assert f"IMPERIAL_PACS (RYJPACS@127.0.0.1:{scp.port}) answered C-ECHO: success" in out
    wait_until(lambda: "Received Echo Request" in scp.log(), timeout=5, message="storescp saw the C-ECHO")

    out = cli("node", "echo", "IMPERIAL_OLD", ok=False).output
    assert f"IMPERIAL_OLD (RYJOLD@127.0.0.1:{closed_port}): cannot connect" in out
    assert "success" not in out
    assert "no node named NOPE" in cli("node", "echo", "NOPE", ok=False).output

    cli(
        "node",
        "add",
        "NOWHERE",
        "--ae",
        "NOWHERE",
        "--host",
        "no-such-host.invalid",
        "--port",
        104,
        "--institution",
        "RYJ",
    )
    out = cli("node", "echo", "NOWHERE", ok=False).output
    assert "cannot reach no-such-host.invalid" in out


def test_node_echo_rejected_association(setup):
    """A node that refuses the hub's AE title: here another imex hub, which does not know "IMEX"."""
    cli, hub, _ = setup()
    cli("institution", "add", "RYJ", "Imperial College Healthcare")
    cli(
        "node",
        "add",
        "OTHER_HUB",
        "--ae",
        "OTHERHUB",
        "--host",
        "127.0.0.1",
        "--port",
        hub.listener.port,
        "--institution",
        "RYJ",
    )
    out = cli("node", "echo", "OTHER_HUB", ok=False).output
    assert f"OTHER_HUB (OTHERHUB@127.0.0.1:{hub.listener.port}) rejected the association" in out
    assert "calling AE title not recognised" in out


# -- transfers ----------------------------------------------------------------------------------------


def test_transfers_list_show_retry_on_a_failed_transfer(setup, storescp, tmp_path):
    down_port = peers.free_port()  # Imperial's PACS is down: nothing listens here yet
    cli, hub, _ = setup(delivery__max_attempts=2)
    _hospitals(cli, hub, dest_port=down_port)
    files = make_study(tmp_path / "study", instances_per_series=3, accession="CLIACC1", patient_id="PID123")

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: transfer_states(hub) == [("failed", 0, 3)], message="transfer failed for good")
    tid = _only_transfer_id(hub)

    rows = [line for line in cli("transfers", "list").output.splitlines()[1:] if line.strip()]
    assert len(rows) == 1
    fields = rows[0].split()
    assert fields[:5] == [str(tid), "failed", "0/3", "2", "IMPERIAL_PACS"]
    assert "PID123" in rows[0]
    assert f"cannot connect to RYJPACS@127.0.0.1:{down_port}" in rows[0]
    assert len(cli("transfers", "list", "--state", "delivered").output.splitlines()) == 1  # header only
    assert len(cli("transfers", "list", "--state", "failed").output.splitlines()) == 2

    show = cli("transfers", "show", tid).output
    assert f"transfer {tid}: failed  (alias RYJ)" in show
    assert "accession 'CLIACC1'" in show
    assert f"IMPERIAL_PACS RYJPACS@127.0.0.1:{down_port} (RYJ Imperial College Healthcare)" in show
    assert "0/3 instances" in show and "2 attempt(s)" in show
    assert f"last error   cannot connect to RYJPACS@127.0.0.1:{down_port}" in show
    history = show.split("history:")[1]
    assert [e in history for e in ("queued", "sending", "retry-scheduled", "failed")] == [True] * 4
    assert "gave up after 2 attempts" in history
    assert "no transfer 999" in cli("transfers", "show", 999, ok=False).output

    dest = storescp("RYJPACS", port=down_port)  # Imperial's PACS is back
    assert "queued again" in cli("transfers", "retry", tid).output
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="retried transfer delivered")
    assert sorted(dest.sop_uids()) == _sop_uids(files)
    show = cli("transfers", "show", tid).output
    assert f"transfer {tid}: delivered" in show and "operator retry (was failed)" in show

    out = cli("transfers", "retry", tid, ok=False).output
    assert "was delivered; nothing to retry" in out
    out = cli("transfers", "cancel", tid, ok=False).output
    assert "is delivered; nothing to cancel" in out
    assert "no transfer 999" in cli("transfers", "retry", 999, ok=False).output
    assert _transfer(hub, tid).state == "delivered"
    assert cli("transfers", "retry", ok=False).exit_code == 2  # usage: ids or --all-failed

    # a node with transfers is disabled, not deleted, so the history stays readable
    assert "disabled node IMPERIAL_PACS" in cli("node", "remove", "IMPERIAL_PACS").output
    row = [line for line in cli("node", "list").output.splitlines() if line.startswith("IMPERIAL_PACS")]
    assert len(row) == 1 and row[0].endswith("disabled")
    assert f"transfer {tid}: delivered" in cli("transfers", "show", tid).output


def test_transfers_cancel_stops_retries_and_retry_all_failed(setup, storescp, tmp_path):
    down_port = peers.free_port()
    cli, hub, _ = setup(delivery__max_attempts=1000)  # keeps retrying: pending until cancelled
    _hospitals(cli, hub, dest_port=down_port)
    first = make_study(tmp_path / "a", instances_per_series=2, accession="A1")
    second = make_study(tmp_path / "b", instances_per_series=2, accession="B1", patient_id="OTHER")
    assert peers.storescu(first, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2
    assert peers.storescu(second, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2

    def ids_by_accession() -> dict[str, int]:
        with hub.db.session() as s:
            return {
                acc: tid
                for tid, acc in s.execute(
                    select(Transfer.id, Study.accession_number).join(Study, Study.id == Transfer.study_id)
                )
            }

    found = wait_until(lambda: len(ids_by_accession()) == 2 and ids_by_accession(), message="two transfers")
    wait_until(lambda: all(_transfer(hub, t).attempts >= 2 for t in found.values()), message="retries")

    out = cli("transfers", "cancel", found["A1"], found["B1"]).output
    assert f"transfer {found['A1']}: cancelled" in out and f"transfer {found['B1']}: cancelled" in out
    dest = storescp("RYJPACS", port=down_port)
    # a cancelled transfer is not sent even though the destination is back

    time.sleep(2.5)  # longer than retry_max_seconds
    assert dest.files() == []
    assert [s for s, _, _ in transfer_states(hub)] == ["cancelled", "cancelled"]
    listing = cli("transfers", "list", "--state", "cancelled").output.splitlines()
    assert len(listing) == 3

    # --all-failed does not pick up cancelled transfers; an explicit retry does
    cli("transfers", "retry", "--all-failed")
    assert [s for s, _, _ in transfer_states(hub)] == ["cancelled", "cancelled"]
    out = cli("transfers", "retry", found["A1"]).output
    assert "queued again" in out
    wait_until(lambda: _transfer(hub, found["A1"]).state == "delivered", message="A1 delivered")
    assert sorted(dest.sop_uids()) == _sop_uids(first)
    assert _transfer(hub, found["B1"]).state == "cancelled"


def test_transfers_retry_all_failed(setup, storescp, tmp_path):
    down_port = peers.free_port()
    cli, hub, _ = setup(delivery__max_attempts=1)
    _hospitals(cli, hub, dest_port=down_port)
    first = make_study(tmp_path / "a", instances_per_series=2, accession="A1")
    second = make_study(tmp_path / "b", instances_per_series=3, accession="B1", patient_id="OTHER")
    assert peers.storescu(first, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2
    assert peers.storescu(second, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: sorted(transfer_states(hub)) == [("failed", 0, 2), ("failed", 0, 3)], message="both failed")

    dest = storescp("RYJPACS", port=down_port)
    out = cli("transfers", "retry", "--all-failed").output
    assert out.count("queued again") == 2
    wait_until(
        lambda: sorted(transfer_states(hub)) == [("delivered", 2, 2), ("delivered", 3, 3)], message="both delivered"
    )
    assert sorted(dest.sop_uids()) == sorted(_sop_uids(first) + _sop_uids(second))


# -- quarantine ---------------------------------------------------------------------------------------


def test_quarantine_list_and_route(setup, storescp, tmp_path):
    dest = storescp("RYJPACS")
    cli, hub, _ = setup()
    _hospitals(cli, hub, dest_port=dest.port)
    assert "quarantine is empty" in cli("quarantine", "list").output
    files = make_study(tmp_path / "study", instances_per_series=3, accession="QACC1")
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    # sent to the hub's own AE title, with no routing code and no rules: nowhere to go
    assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 3
    wait_until(lambda: study_uid in cli("quarantine", "list").output, message="study in quarantine")
    listing = cli("quarantine", "list").output
    assert "from RJZ" in listing and "3 instances" in listing
    assert "sent to IMEX, which is no destination alias" in listing
    assert "no destination code in RequestingService" in listing
    assert "no rule matches" in listing
    assert transfer_states(hub) == []

    assert (
        "NOPE is neither an institution's ODS code nor a node"
        in cli("quarantine", "route", study_uid, "--to", "NOPE", ok=False).output
    )
    assert "no study 1.2.3.4" in cli("quarantine", "route", "1.2.3.4", "--to", "RYJ", ok=False).output
    assert study_uid in cli("quarantine", "list").output

    out = cli("quarantine", "route", study_uid, "--to", "RYJ").output
    assert "queued transfer(s)" in out
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="routed study delivered")
    dest.wait_for(3)
    assert sorted(dest.sop_uids()) == _sop_uids(files)
    assert "quarantine is empty" in cli("quarantine", "list").output
    assert "routed by operator to RYJ" in cli("transfers", "show", _only_transfer_id(hub)).output


# -- send ---------------------------------------------------------------------------------------------


def _make_cd(files: list[Path], cd: Path) -> Path:
    """A CD layout: DICOM/Snnn/Innnnn files indexed by a DICOMDIR, plus the usual non-DICOM extras."""
    for f in files:
        folder = cd / "DICOM" / f"S{f.parent.name}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f"I{f.stem}")
    if shutil.which("dcmmkdir"):
        proc = subprocess.run(
            ["dcmmkdir", "+r", "-Pgp", "+D", "DICOMDIR", "DICOM"], cwd=cd, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        from pydicom.fileset import FileSet

        fs = FileSet()
        for p in sorted((cd / "DICOM").rglob("*")):
            if p.is_file():
                fs.add(str(p))
        fs.write(cd)
    assert (cd / "DICOMDIR").exists()
    (cd / "AUTORUN.INF").write_text("[autorun]\nopen=viewer.exe\n")
    (cd / "README.TXT").write_text("This CD holds images.\n")
    return cd / "DICOMDIR"


@pytest.mark.parametrize("layout", ["folder", "zip", "dicomdir"])
def test_send_folder_zip_and_cd(layout, setup, storescp, tmp_path):
    dest = storescp("RYJPACS")
    cli, hub, config = setup()
    _hospitals(cli, hub, dest_port=dest.port, source_aet=config["send.calling_aet"])
    files = make_study(tmp_path / "study", series=2, instances_per_series=3, accession="SEND1")
    if layout == "folder":
        target = tmp_path / "study"
        (target / "notes.txt").write_text("not an image")
        non_dicom = "notes.txt"
    elif layout == "zip":
        target = tmp_path / "study.zip"
        with zipfile.ZipFile(target, "w") as archive:
            for f in files:
                archive.write(f, f"images/{f.parent.name}/{f.name}")
            archive.writestr("images/notes.txt", "not an image")
            # a member climbing out of the extraction folder is never written nor sent
            stray = make_study(tmp_path / "stray", instances_per_series=1)[0]
            archive.write(stray, "../stray.dcm")
        non_dicom = "notes.txt"
    else:
        target = _make_cd(files, tmp_path / "cd")
        non_dicom = "README.TXT"

    proc = cli.run("send", target, "--to", "ryj")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"sent {len(files)}, failed 0, skipped" in proc.stdout
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert any(non_dicom in line and "not a DICOM file" in line for line in skipped), proc.stderr
    assert not any(".dcm" in line or "/I0" in line for line in skipped), skipped
    dest.wait_for(len(files))
    assert sorted(dest.sop_uids()) == _sop_uids(files)
    wait_until(lambda: transfer_states(hub) == [("delivered", len(files), len(files))], message="delivered")
    with hub.db.session() as s:
        assert s.scalar(select(Transfer.reason)) == "alias RYJ"


def test_send_reports_refused_association_and_missing_input(setup, storescp, tmp_path):
    dest = storescp("RYJPACS")
    cli, hub, config = setup()
    _hospitals(cli, hub, dest_port=dest.port, source_aet=config["send.calling_aet"])
    files = make_study(tmp_path / "study", instances_per_series=2)

    proc = cli.run("send", tmp_path / "study", "--to", "RYJ", "--aet", "UNKNOWNAE")
    assert proc.returncode == 1
    assert "sent 0, failed 2" in proc.stdout
    assert "rejected the association" in proc.stderr and "calling AE title not recognised" in proc.stderr

    result = cli("send", tmp_path / "nothing-here", "--to", "RYJ", ok=False)
    assert result.exit_code == 1 and "no DICOM files found" in result.stderr

    result = cli("send", tmp_path / "study", "--to", "RYJ", "--hub", "no-such-host.invalid:104", ok=False)
    assert result.exit_code == 1
    assert "sent 0, failed 2" in result.stdout and "cannot connect to RYJ@no-such-host.invalid:104" in result.stderr

    result = cli("send", tmp_path / "study", "--to", "RYJ", "--hub", "127.0.0.1:abc", ok=False)
    assert result.exit_code == 2 and "--hub" in result.stderr
    assert dest.files() == [] and transfer_states(hub) == []
    assert len(files) == 2


# -- config docs --------------------------------------------------------------------------------------


def test_config_docs_lists_every_setting(setup):
    cli, _, _ = setup(hub=False)
    out = cli("config", "docs").output
    for setting in SETTINGS:
        assert f"| `{setting.key}` | `{setting.env}` |" in out
    reference = REPO / "docs" / "configuration.md"
    if not reference.exists():
        pytest.skip("docs/configuration.md does not exist yet")
    assert out == reference.read_text(), "docs/configuration.md is stale: run `imex config docs --write ...`"
