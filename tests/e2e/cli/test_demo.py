"""The README's first command: `imex serve --demo` starts a hub with demo hospitals and everything around
them (King's PACS to search and retrieve from, Imperial's PACS, a RIS, a mail catcher), pushes the sample
studies with their reports once, and prints where to sign in. Signing in with what it printed shows the
studies delivered with their reports, the e-mail the hub sent, and King's PACS searched through the hub;
a second start with the same data directory does not push again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from peers import free_port

IMEX = Path(sys.executable).with_name("imex")
PUSHED = {"RJZDEMO1": ("CT", 32), "RJZDEMO2": ("MR", 36), "RJZDEMO3": ("US", 1)}
ON_KINGS_PACS = {*PUSHED, "RJZDEMO0"}  # and a prior that stays there


def _start(tmp_path: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / name
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(IMEX), "serve", "--demo"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    return proc, log


def _banner(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 90
    while "Press Ctrl+C" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    text = log.read_text()
    assert "Press Ctrl+C" in text, text
    return text


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]


def _sign_in(url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url.rstrip("/"), timeout=30)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    signed = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert signed.status_code == 303, signed.text
    return client


def _until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, f"timed out waiting for {what}"
            return found
        time.sleep(0.5)


def _received(url: str) -> float:
    """Instances the hub received over DICOM since it started (from /metrics, open to this machine)."""
    text = httpx.get(url.rstrip("/") + "/metrics", timeout=30).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("imex_instances_received_total")
    )


def test_demo_shows_everything_once(tmp_path):
    data = tmp_path / "data"
    env = {
        **os.environ,
        "IMEX_DATA_DIR": str(data),
        "IMEX_DICOM_PORT": str(free_port()),
        "IMEX_HTTP_PORT": str(free_port()),
        "IMEX_HL7_PORT": str(free_port()),
        "IMEX_DICOM_HOST": "127.0.0.1",
        "IMEX_HTTP_HOST": "127.0.0.1",
        "IMEX_HL7_HOST": "127.0.0.1",
        "IMEX_ROUTING_STABLE_SECONDS": "1",
        "IMEX_STORE_FSYNC": "false",
    }
    env.pop("IMEX_CONFIG", None)
    proc, log = _start(tmp_path, env, "first.log")
    try:
        banner = _banner(proc, log)
        url = re.search(r"portal\s+(http://\S+)", banner).group(1)
        passwords = dict(re.findall(r"^\s+(\w+)\s+password (\S+)", banner, re.MULTILINE))
        assert {"admin", "kings", "imperial", "radiographer", "clinician", "governance", "guardian"} <= set(passwords)
        assert "/demo/mail" in banner and "KINGSPACS@127.0.0.1:" in banner and "HL7 MLLP on 127.0.0.1:" in banner
        assert "pushed now" in banner, banner
        admin = _sign_in(url, "admin", passwords["admin"])
        admin.headers["Accept"] = "application/json"

        # the sample studies, delivered from King's to Imperial
        def delivered() -> list[dict]:
            rows = admin.get("/api/v1/transfers", params={"direction": "all"}).json()["items"]
            return rows if len(rows) == len(PUSHED) and all(r["state"] == "delivered" for r in rows) else []

        rows = {r["accession_number"]: r for r in _until("the samples delivered", delivered)}
        assert {a: (r["modalities"], r["images"]) for a, r in rows.items()} == PUSHED, rows
        assert all(r["source"]["ods"] == "RJZ" and r["destination"]["ods"] == "RYJ" for r in rows.values())

        # the CT's report, sent by King's RIS, is on the delivered study and went on to Imperial's RIS
        ct = rows["RJZDEMO1"]["study_id"]
        reports = _until("the CT's report", lambda: admin.get(f"/api/v1/studies/{ct}").json()["reports"])
        assert reports[0]["status"] == "final" and "no acute abnormality" in reports[0]["text"], reports
        _until(
            "the report at Imperial's RIS",
            lambda: any(b"RJZDEMO1" in p.read_bytes() for p in (data / "demo-ris").glob("*.hl7")),
        )

        # the e-mail the hub sent, on the mail page, for any signed-in user
        clinician = _sign_in(url, "clinician", passwords["clinician"])
        _until("an arrival alert on the mail page", lambda: "Images received from" in clinician.get("/demo/mail").text)
        clinician.headers["Accept"] = "application/json"
        assert [p["ods"] for p in clinician.get("/api/v1/requests/partners").json()] == ["RJZ"]  # may ask King's

        # King's PACS, searched through the hub
        nodes = admin.get("/api/v1/pacs/nodes").json()
        kings = next(n for n in nodes if n["ae_title"] == "KINGSPACS")
        found = admin.get(f"/api/v1/pacs/{kings['id']}/studies", params={"patient_id": "DEMO0001"})
        assert found.status_code == 200, found.text
        assert {s["accession"] for s in found.json()["items"]} == ON_KINGS_PACS, found.json()
        assert (data / "demo-users.txt").stat().st_mode & 0o777 == 0o600
        assert _received(url) == sum(n for _, n in PUSHED.values())
    finally:
        _stop(proc, log)

    # a second start with the same data directory prints the banner but pushes nothing
    proc, log = _start(tmp_path, env, "second.log")
    try:
        banner = _banner(proc, log)
        assert "not pushed again" in banner and "pushed now" not in banner, banner
        assert re.search(r"admin\s+password (\S+)", banner).group(1) == passwords["admin"]
        time.sleep(1.5)  # a push would be under way by now
        assert _received(url) == 0
    finally:
        _stop(proc, log)
