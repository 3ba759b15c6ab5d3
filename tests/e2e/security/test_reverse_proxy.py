"""docs/nginx-imex.conf, run as it is in front of a hub (only its addresses, port and certificate paths
replaced): TLS with the hub's security headers and HSTS, the client's address passed on and never one it
forged, /metrics not served, uploads streamed so an unsigned-in caller's 401 comes at once, and a slow
request head cut by the proxy."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

import peers
from imex.db.models import AuditEvent
from sectools import make_ca

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
SNIPPET = Path(__file__).resolve().parents[3] / "docs" / "nginx-imex.conf"


def _site(hub_port: int, port: int, cert: Path, key: Path) -> str:
    text = SNIPPET.read_text()
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{hub_port};"),
        ("/etc/imex/tls/hub.crt", str(cert)),
        ("/etc/imex/tls/hub.key", str(key)),
    ):
        assert text.count(old) == 1, f"{old!r} is no longer in {SNIPPET.name}: update this test with it"
        text = text.replace(old, new)
    return text


@pytest.fixture
def proxied(make_config, start_hub, tmp_path):  # type: ignore[no-untyped-def]
    ca = make_ca(tmp_path / "ca")
    hub = start_hub(make_config(http__trusted_proxies="127.0.0.1"))
    from imex.directory import add_institution

    add_institution(hub.db, "RJZ", "King's College Hospital")
    port = peers.free_port()
    root = tmp_path / "nginx"
    root.mkdir()
    (root / "imex.conf").write_text(_site(hub.config["http.port"], port, ca.cert_path("hub"), ca.key_path("hub")))
    temp = " ".join(f"{kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} warn;\n"
        f"events {{ worker_connections 256; }}\nhttp {{ access_log off; {temp} include {root / 'imex.conf'}; }}\n"
    )
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(root), "-c", str(root / "nginx.conf")], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf")], stderr=subprocess.PIPE)
    try:
        peers.wait_port(port, timeout=20)
        yield hub, port, ca.ca_cert_path
    finally:
        proc.terminate()
        proc.wait(10)


def _tls_socket(port: int, ca_file: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca_file))
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="127.0.0.1")
    sock.settimeout(30)
    return sock


def test_nginx_snippet_in_front_of_the_hub(proxied) -> None:  # type: ignore[no-untyped-def]
    hub, port, ca_file = proxied
    web = httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(ca_file)), timeout=30
    )
    health = web.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert (
        health.headers["x-content-type-options"] == "nosniff"
        and "frame-ancestors" in health.headers["content-security-policy"]
    )
    assert "max-age=" in health.headers["strict-transport-security"]  # X-Forwarded-Proto believed
    assert web.get("/metrics").status_code == 404
    # a forged X-Forwarded-For is replaced by the address the proxy saw
    failed = web.post(
        "/api/v1/auth/token", json={"username": "nobody", "password": "x"}, headers={"X-Forwarded-For": "203.0.113.66"}
    )
    assert failed.status_code == 401
    with hub.db.sessions() as s:
        assert s.scalar(select(AuditEvent.ip).where(AuditEvent.action == "auth.login_failed")) == "127.0.0.1"

    # an upload from someone not signed in: the proxy passes it on as it comes and the 401 comes back at once
    sock = _tls_socket(port, ca_file)
    sock.sendall(
        b"POST /api/v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1073741824\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n"
    )
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    sock.close()

    # a request head trickled a line at a time is cut by the proxy (client_header_timeout)
    slow = _tls_socket(port, ca_file)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started, closed = time.monotonic(), False
    while not closed and time.monotonic() - started < 40:
        try:
            slow.sendall(b"X-Slow: 1\r\n")
            slow.settimeout(1.0)
            closed = slow.recv(65536) == b""
        except TimeoutError:
            continue
        except (ssl.SSLError, OSError):
            closed = True
    assert closed
