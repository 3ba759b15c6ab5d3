"""The README's first command: `imex serve --demo` starts a hub with demo hospitals, pushes a sample study
and prints where to sign in; signing in with what it printed shows the study delivered."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from peers import free_port

IMEX = Path(sys.executable).with_name("imex")


def test_demo_prints_a_working_sign_in(tmp_path):
    dicom_port = free_port()
    env = {
        **os.environ,
        "IMEX_DATA_DIR": str(tmp_path / "data"),
        "IMEX_DICOM_PORT": str(dicom_port),
        "IMEX_HTTP_PORT": str(free_port()),
        "IMEX_HL7_PORT": str(free_port()),
        "IMEX_DICOM_HOST": "127.0.0.1",
        "IMEX_HTTP_HOST": "127.0.0.1",
        "IMEX_HL7_HOST": "127.0.0.1",
        "IMEX_ROUTING_STABLE_SECONDS": "1",
        "IMEX_STORE_FSYNC": "false",
    }
    env.pop("IMEX_CONFIG", None)
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(IMEX), "serve", "--demo"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + 90
        while "Press Ctrl+C" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        banner = log.read_text()
        assert "Press Ctrl+C" in banner, banner
        url = re.search(r"portal\s+(http://\S+)", banner).group(1)
        password = re.search(r"admin\s+password (\S+)", banner).group(1)
        client = httpx.Client(base_url=url.rstrip("/"), timeout=15)
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed = client.post("/login", data={"username": "admin", "password": password, "csrf_token": token})
        assert signed.status_code == 303, signed.text
        client.headers["Accept"] = "application/json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = client.get("/api/v1/transfers", params={"direction": "all"}).json()["items"]
            if rows and rows[0]["state"] == "delivered":
                break
            time.sleep(0.5)
        assert rows[0]["state"] == "delivered" and rows[0]["images"] == 24, rows
        assert rows[0]["source"]["ods"] == "RJZ" and rows[0]["destination"]["ods"] == "RYJ"
        assert len(list((tmp_path / "data" / "demo-pacs").glob("*.dcm"))) == 24
        assert (tmp_path / "data" / "demo-users.txt").stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
