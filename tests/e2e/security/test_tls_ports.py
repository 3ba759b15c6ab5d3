"""`openssl s_client` against the hub's DICOM, MLLP and HTTPS ports: TLS 1.2 and 1.3 are accepted with
forward-secret AEAD suites only; TLS 1.0/1.1 and weak suites (static RSA, CBC, RC4, 3DES, NULL) are
refused. HTTPS sends HSTS."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import httpx
import pytest

from hl7tools import register_ris
from hubtools import register_hospitals
from imex.tls.profile import BCP195_CIPHERS
from sectools import make_ca, tls_overrides

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
WEAK = [
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES128-SHA256",
    "DES-CBC3-SHA",
    "RC4-SHA",
    "NULL-SHA256",
    "ECDHE-ECDSA-NULL-SHA",
    "ADH-AES128-GCM-SHA256",
]


def s_client(port: int, *args: str) -> tuple[bool, str]:
    """(handshake completed, output) of openssl s_client; SECLEVEL 0 so the client offers what the hub
    must refuse itself."""
    run = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = run.stdout + run.stderr
    cipher = next((line.split("Cipher is", 1)[1].strip() for line in out.splitlines() if "Cipher is" in line), "")
    ok = run.returncode == 0 and "(NONE)" not in out and cipher not in ("", "0000")
    return ok, out


def _check(port: int, ca, client: list[str]) -> None:  # type: ignore[no-untyped-def]
    trust = ["-CAfile", str(ca.ca_cert_path), "-verify_return_error"]
    ok, out = s_client(port, "-tls1_2", *trust, *client)
    assert ok, out[-3000:]
    negotiated = next(line.split("Cipher is", 1)[1].strip() for line in out.splitlines() if "Cipher is" in line)
    assert negotiated in BCP195_CIPHERS.split(":"), negotiated
    ok, out = s_client(port, "-tls1_3", *trust, *client)
    assert ok, out[-3000:]
    for old in ("-tls1", "-tls1_1"):
        ok, out = s_client(port, old, "-cipher", "ALL:@SECLEVEL=0", *client)
        assert not ok, f"{old} accepted:\n{out[-2000:]}"
    for weak in WEAK:
        ok, out = s_client(port, "-tls1_2", "-cipher", f"{weak}:@SECLEVEL=0", *client)
        assert not ok, f"{weak} accepted:\n{out[-2000:]}"


def test_dicom_mllp_and_https_ports_speak_tls12_plus_with_strong_suites_only(make_config, start_hub, tmp_path):
    ca = make_ca(tmp_path / "ca")
    hub = start_hub(make_config(http__tls=True, hl7__tls=True, **tls_overrides(ca)))
    register_hospitals(hub, dest_port=11112)
    register_ris(hub)  # the MLLP port lets only registered RIS addresses reach the handshake
    ca.issue("KINGS_PACS", ["127.0.0.1"])
    node = ["-cert", str(ca.cert_path("KINGS_PACS")), "-key", str(ca.key_path("KINGS_PACS"))]
    _check(hub.listener.tls_port, ca, node)
    _check(hub.reports.port, ca, [])
    _check(hub.config["http.port"], ca, [])
    # the DICOM TLS port wants a client certificate: without one the handshake fails (TLS 1.2)
    ok, out = s_client(hub.listener.tls_port, "-tls1_2", "-CAfile", str(ca.ca_cert_path))
    assert not ok, out[-2000:]

    base = f"https://localhost:{hub.config['http.port']}"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.ca_cert_path))) as client:
        answer = client.get(f"{base}/login")
    assert answer.status_code == 200
    assert "max-age=" in answer.headers["strict-transport-security"]
    assert "server" not in answer.headers
    with pytest.raises(httpx.ConnectError):  # and the certificate is checked by clients
        httpx.get(
            f"{base}/healthz", verify=ssl.create_default_context(cafile=str(make_ca(tmp_path / "other").ca_cert_path))
        )


def test_mllp_can_require_a_client_certificate(make_config, start_hub, tmp_path):
    from imex.hl7 import client

    ca = make_ca(tmp_path / "ca")
    hub = start_hub(make_config(hl7__tls=True, hl7__tls_verify_client=True, **tls_overrides(ca)))
    register_hospitals(hub, dest_port=11112)
    register_ris(hub)  # the MLLP port lets only registered RIS addresses reach the handshake
    ok, _ = s_client(hub.reports.port, "-tls1_2", "-CAfile", str(ca.ca_cert_path))
    assert not ok
    ca.issue("kings-ris", ["127.0.0.1"])
    ok, out = s_client(
        hub.reports.port,
        "-tls1_2",
        "-CAfile",
        str(ca.ca_cert_path),
        "-cert",
        str(ca.cert_path("kings-ris")),
        "-key",
        str(ca.key_path("kings-ris")),
    )
    assert ok, out[-2000:]
    with pytest.raises(client.MllpError):
        client.send(
            "localhost",
            hub.reports.port,
            b"MSH|^~\\&|RIS|RJZ|IMEX|HUB|20261125||ORU^R01|1|P|2.3\r",
            tls=True,
            ca_file=str(ca.ca_cert_path),
            timeout=5,
        )
