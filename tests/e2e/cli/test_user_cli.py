"""`imex user ...`: the first admin from the command line, then signing in with what it printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from hubtools import write_toml
from portaltools import base_url, login_form_token

IMEX = Path(sys.executable).with_name("imex")


def imex(toml: Path, *args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(IMEX), "--config", str(toml), *args], capture_output=True, text=True, input=stdin, timeout=120
    )
    if ok:
        assert done.returncode == 0, done.stderr + done.stdout
    else:
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    return done


def sign_in(hub, username: str, password: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    client = httpx.Client(base_url=base_url(hub))
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": login_form_token(client)}
    )


def test_first_admin_reset_disable_and_grant_from_the_command_line(make_config, start_hub, tmp_path):
    config = make_config()
    toml = write_toml(tmp_path / "imex.toml", config)
    hub = start_hub(config)
    imex(toml, "institution", "add", "RJZ", "King's College Hospital")
    assert "no users" in imex(toml, "user", "list").stdout

    added = imex(
        toml,
        "user",
        "add",
        "root",
        "--institution",
        "RJZ",
        "--admin",
        "--name",
        "Hub Operator",
        stdin="an initial passphrase\nan initial passphrase\n",
    )
    assert "added root at RJZ with roles system_admin" in added.stdout
    first = sign_in(hub, "root", "an initial passphrase")
    assert first.status_code == 303 and first.headers["location"] == "/login/password"  # must choose a new one

    weak = imex(toml, "user", "add", "weak", "--institution", "RJZ", "--password", "abc", ok=False)
    assert "at least" in weak.stderr
    nowhere = imex(toml, "user", "add", "lost", "--institution", "ZZZ", "--password", "a fine passphrase", ok=False)
    assert "ZZZ" in nowhere.stderr

    reset = imex(toml, "user", "reset", "root")
    temporary = re.search(r"one-time password for root: (\S+)", reset.stdout).group(1)
    assert sign_in(hub, "root", "an initial passphrase").status_code == 401
    assert sign_in(hub, "root", temporary).status_code == 303

    imex(toml, "user", "grant", "root", "auditor")
    listing = imex(toml, "user", "list").stdout
    assert re.search(r"root\s+RJZ\s+active\s+.*system_admin", listing) and "auditor" in listing
    assert "wizard" in imex(toml, "user", "grant", "root", "wizard", ok=False).stderr
    imex(toml, "user", "disable", "root")
    assert sign_in(hub, "root", temporary).status_code == 401
    assert "disabled" in imex(toml, "user", "list").stdout
    imex(toml, "user", "enable", "root")
    assert sign_in(hub, "root", temporary).status_code == 303
    assert "no user 'ghost'" in imex(toml, "user", "reset", "ghost", ok=False).stderr
