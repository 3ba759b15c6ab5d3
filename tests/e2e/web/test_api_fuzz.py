"""Bounded fuzzing of the JSON API with schemathesis (a client that is not ours): generated and mutated
requests against a running hub with real data, as a system admin. No request may make the hub answer
5xx, and the hub keeps serving afterwards."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.samples import make_study
from portaltools import add_user, base_url, bearer

ST = Path(sys.executable).with_name("st")


@pytest.mark.skipif(not ST.exists() and shutil.which("st") is None, reason="schemathesis is not installed")
def test_api_never_answers_5xx_to_generated_requests(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "ct", instances_per_series=2, modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    add_user(hub, "fuzzer", "RJZ", ["system_admin"])
    token = bearer(hub, "fuzzer").headers["Authorization"]
    report = tmp_path / "schemathesis"
    run = subprocess.run(
        [
            str(ST),
            "run",
            f"{base_url(hub)}/api/v1/openapi.json",
            "-H",
            f"Authorization: {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "8",
            "--max-time",
            "90",
            "--workers",
            "1",
            "--seed",
            "20261125",
            "--request-timeout",
            "20",
            "--report",
            "junit",
            "--report-dir",
            str(report),
            # the calls that would lock the fuzzer itself out (then everything is 401 and little is tested)
            "--exclude-path",
            "/api/v1/me/password",
            "--exclude-path-regex",
            r"/users/\{user_id\}/(disable|reset)$",
            "--exclude-path",
            "/api/v1/auth/tokens/{token_id}",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and int(counts.group(1)) == int(counts.group(2)) > 500, run.stdout[-3000:]
    assert httpx.get(f"{base_url(hub)}/healthz").json()["status"] == "ok"
