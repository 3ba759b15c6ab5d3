"""The HTTP port under hostile or careless clients: no request body is read before the caller is known;
slow request heads are cut at a deadline and a flood of them does not starve honest requests; error
pages (500 and 503 included) carry the security headers; X-Forwarded-For is believed only from a
configured proxy; /healthz says when the store refuses arrivals; /metrics is not open to everyone; and a
STOW-RS request is stored part by part as it arrives, never held whole."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dwtools import token
from hubtools import wait_until
from imex.auth import accounts
from imex.db.models import AuditEvent, Instance, Report, Study
from imex.directory import add_institution
from imex.samples import make_study
from portaltools import PASSWORD, add_user, base_url, browser

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


def assert_security_headers(headers: Any) -> None:
    for name in SECURITY_HEADERS:
        assert name in headers, f"{name} missing"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"


@pytest.fixture
def hub(make_config, start_hub):  # type: ignore[no-untyped-def]
    hub = start_hub(make_config())
    add_institution(hub.db, "RJZ", "King's College Hospital")
    return hub


def connect(hub: Any, timeout: float = 20.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", hub.config["http.port"]), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """The response's status and headers (raises socket.timeout when none comes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True


def multipart_body(files: list[Path], boundary: str) -> list[bytes]:
    """The pieces of a STOW-RS body: each part with the delimiter line that ends it, then the close."""
    pieces = [f"--{boundary}\r\n".encode()]
    for path in files:
        pieces[-1] += b"Content-Type: application/dicom\r\n\r\n" + path.read_bytes()
        pieces.append(f"\r\n--{boundary}\r\n".encode())
    pieces[-1] = f"\r\n--{boundary}--\r\n".encode()
    return pieces


# -- no body before the caller is known -------------------------------------------------------------------


def test_a_body_is_never_read_before_the_caller_is_known(hub) -> None:  # type: ignore[no-untyped-def]
    add_user(hub, "sender", "RJZ", ["sender"])
    with hub.db.sessions() as s:  # an account with a one-time password: signed in only part way
        temporary = accounts.reset_user(s, accounts.user_by_name(s, "sender"))
        s.commit()
    partial = httpx.Client(base_url=base_url(hub), follow_redirects=False)
    form = partial.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    assert (
        partial.post("/login", data={"username": "sender", "password": temporary, "csrf_token": form}).headers[
            "location"
        ]
        == "/login/password"
    )
    partial_cookie = f"imex_session={partial.cookies['imex_session']}"

    gib = 1 << 30
    cases = [  # (request line, content type, extra header, declared length, expected status)
        ("POST /api/v1/attachments", "multipart/form-data; boundary=x", "", gib, 401),
        ("POST /api/v1/attachments", "multipart/form-data; boundary=x", "Authorization: Bearer imex_forged", gib, 401),
        ("POST /dicomweb/studies", 'multipart/related; type="application/dicom"; boundary=x', "", gib, 401),
        ("POST /api/v1/worklists", "application/json", "", 500_000, 401),
        ("POST /api/v1/worklists", "application/json", f"Cookie: {partial_cookie}", 500_000, 401),
        ("PUT /api/v1/uploads/1/files?path=a.dcm&size=1000000", "application/octet-stream", "", 1_000_000, 401),
        ("POST /admin/users", "application/x-www-form-urlencoded", "", 500_000, 303),  # a page: to sign-in
    ]
    for line, content_type, extra, length, status in cases:
        sock = connect(hub)
        head = (
            f"{line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            + (f"{extra}\r\n" if extra else "")
            + "\r\n"
        )
        sock.sendall(head.encode() + b'--x\r\nContent-Disposition: form-data; name="file"\r\n')  # and no more
        answered, headers = read_head(sock)  # comes while the body is still owed
        assert answered == status, (line, extra, answered)
        assert headers["connection"] == "close" and closed_by_server(sock), line
        assert_security_headers(headers)
        if status == 303:
            assert headers["location"] == "/login"
        sock.close()
    # a caller who is signed in still has its body read
    with hub.db.sessions() as s:
        accounts.set_password(s, accounts.user_by_name(s, "sender"), PASSWORD)
        s.commit()
    api = httpx.Client(base_url=base_url(hub), headers={"Authorization": f"Bearer {token(hub, 'sender')}"})
    answer = api.put("/api/v1/me/preferences", json={"email_events": ["transfer.arrived"]})
    assert answer.status_code == 200 and answer.json()["email_events"] == ["transfer.arrived"]


# -- error pages and their headers ------------------------------------------------------------------------


def test_error_pages_carry_the_security_headers(hub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from imex.web.views import account as account_views

    add_user(hub, "viewer", "RJZ", ["viewer"])
    client = browser(hub, "viewer")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    from imex.web.api import account as account_api

    monkeypatch.setattr(account_views, "dashboard", broken)  # the page's and the API's, as a bug would be
    monkeypatch.setattr(account_api, "dashboard", broken)
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 500 and "Something went wrong" in page.text
    assert_security_headers(page.headers)
    api = client.get("/api/v1/dashboard")
    assert api.status_code == 500 and api.json()["status"] == 500
    assert_security_headers(api.headers)
    for answer in (
        client.get("/no/such/page", headers={"Accept": "text/html"}),
        httpx.get(f"{base_url(hub)}/api/v1/me"),
        httpx.post(f"{base_url(hub)}/api/v1/auth/token", content=b"{", headers={"Content-Type": "application/json"}),
    ):
        assert answer.status_code in (401, 404, 422), answer.status_code
        assert_security_headers(answer.headers)
    # a request head larger than http.max_header_bytes, whole in one piece (431) or still incomplete (400)
    for head, status in (
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000, 400),
    ):
        sock = connect(hub)
        sock.sendall(head)
        answered, headers = read_head(sock)
        assert answered == status and closed_by_server(sock)
        assert_security_headers(headers)
        sock.close()


def test_the_study_page_shows_its_hl7_report(hub, tmp_path) -> None:  # type: ignore[no-untyped-def]
    add_user(hub, "sender", "RJZ", ["sender"])
    [path] = make_study(tmp_path / "s", series=1, instances_per_series=1, modality="MR", accession="ACCREP1")
    stow = httpx.post(
        f"{base_url(hub)}/dicomweb/studies",
        content=b"".join(multipart_body([path], "b0")),
        headers={
            "Authorization": f"Bearer {token(hub, 'sender')}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0',
        },
    )
    assert stow.status_code == 200, stow.text
    with hub.db.sessions() as s:
        study = s.scalar(select(Study))
        s.add(
            Report(
                institution_id=study.institution_id,
                study_id=study.id,
                control_id="MSG1",
                status="final",
                accession_number="ACCREP1",
                clinician="DR^REPORTER",
                observed_at=dt.datetime(2024, 5, 6, 7, 8, 9),
                text="No acute abnormality.",
                raw="MSH|...",
                sop_instance_uid="1.2.826.0.1.3680043.10.1",
            )
        )
        s.commit()
        study_id = study.id
    page = browser(hub, "sender").get(f"/studies/{study_id}")
    assert page.status_code == 200, page.text[:2000]
    assert (
        "No acute abnormality." in page.text and '<time datetime="2024-05-06T07:08:09Z">2024-05-06 07:08' in page.text
    )


# -- proxies, health, metrics ------------------------------------------------------------------------------


def _failed_signin_address(hub: Any, forwarded: str) -> str:
    answer = httpx.post(
        f"{base_url(hub)}/api/v1/auth/token",
        json={"username": "nobody", "password": "x"},
        headers={"X-Forwarded-For": forwarded},
    )
    assert answer.status_code == 401
    with hub.db.sessions() as s:
        return s.scalar(
            select(AuditEvent.ip).where(AuditEvent.action == "auth.login_failed").order_by(AuditEvent.id.desc())
        )  # type: ignore[no-any-return]


def test_forwarded_addresses_are_believed_only_from_a_configured_proxy(make_config, start_hub) -> None:  # type: ignore[no-untyped-def]
    plain = start_hub(make_config())
    assert plain.config["http.trusted_proxies"] == ""
    assert _failed_signin_address(plain, "203.0.113.9") == "127.0.0.1"  # a forged header changes nothing
    proxied = start_hub(make_config(http__trusted_proxies="127.0.0.1"))
    assert _failed_signin_address(proxied, "203.0.113.9") == "203.0.113.9"


def test_healthz_is_degraded_while_the_store_refuses_arrivals(make_config, start_hub) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(make_config(store__min_free_bytes=1 << 62))  # more than any disk has free
    answer = httpx.get(f"{base_url(hub)}/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "degraded"
    assert answer.json()["checks"]["store"].startswith("full")
    assert answer.json()["checks"]["database"] == "ok"
    fine = start_hub(make_config())
    assert httpx.get(f"{base_url(fine)}/healthz").json()["checks"]["store"] == "ok"


def test_metrics_need_their_token_or_a_local_caller(make_config, start_hub) -> None:  # type: ignore[no-untyped-def]
    local = start_hub(make_config(http__trusted_proxies="127.0.0.1"))
    assert httpx.get(f"{base_url(local)}/metrics").status_code == 200  # no token: this machine only
    remote = httpx.get(f"{base_url(local)}/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    assert remote.status_code == 403 and "http.metrics_token" in remote.text
    hub = start_hub(make_config(http__metrics_token="scrape-me-7f3a"))
    url = f"{base_url(hub)}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = httpx.get(url, headers={"Authorization": "Bearer scrape-me-7f3a"})
    assert answer.status_code == 200 and "imex_transfers" in answer.text
    assert_security_headers(answer.headers)


# -- slow clients ---------------------------------------------------------------------------------------------


def test_a_trickled_request_head_is_cut_at_the_deadline(make_config, start_hub) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(make_config(http__header_timeout=2.0))
    silent = connect(hub)  # says nothing at all
    trickler = connect(hub)
    trickler.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    cut = False
    for _ in range(40):  # a header line every 0.5 s: each read is quick, the head never ends
        try:
            trickler.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        time.sleep(0.5)
    assert cut or closed_by_server(trickler)
    assert closed_by_server(silent)
    # a keep-alive connection is given the same deadline for its next request head
    with socket.create_connection(("127.0.0.1", hub.config["http.port"]), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_head(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert closed_by_server(sock)
    assert httpx.get(f"{base_url(hub)}/healthz").status_code == 200


@pytest.fixture
def flood() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for sock in list(sockets):
                try:
                    sock.send(b"X")
                except OSError:
                    sockets.remove(sock)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    yield sockets
    stop.set()
    thread.join(5)
    for sock in sockets:
        sock.close()


def test_a_slow_header_flood_does_not_starve_honest_requests(make_config, start_hub, flood) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(make_config(http__max_connections=100, http__max_pending=64, http__header_timeout=30.0))
    opened = 250  # more than http.max_connections, each trickling its head a byte at a time
    for _ in range(opened):
        sock = connect(hub)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        flood.append(sock)
    time.sleep(1.0)
    statuses = [httpx.get(f"{base_url(hub)}/healthz", timeout=20).status_code for _ in range(20)]
    assert statuses == [200] * 20
    assert len(flood) <= 64 + 20  # the longest-waiting were dropped to make room


def test_beyond_max_connections_the_503_carries_the_security_headers(make_config, start_hub, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(make_config(http__max_connections=1))
    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_user(hub, "sender", "RJZ", ["sender"])
    bearer_token = token(hub, "sender")
    busy = connect(hub)  # a STOW-RS whose body is slow: the only connection allowed is busy
    busy.sendall(
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer_token}\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b0\r\n'
        "Content-Length: 100000\r\n\r\n--b0\r\n".encode()
    )
    # once the server holds it (on a busy machine that can take a moment), every other connection is refused
    answers: list[httpx.Response] = []
    wait_until(
        lambda: answers.append(httpx.get(f"{base_url(hub)}/healthz")) or answers[-1].status_code == 503,
        timeout=20,
        message="the only connection allowed is busy",
    )
    refused = answers[-1]
    assert refused.json()["status"] == 503
    assert_security_headers(refused.headers)
    busy.close()
    wait_until(lambda: httpx.get(f"{base_url(hub)}/healthz").status_code == 200, timeout=20, message="served again")


# -- STOW-RS streamed --------------------------------------------------------------------------------------


def test_stow_stores_each_part_as_it_arrives(hub, tmp_path) -> None:  # type: ignore[no-untyped-def]
    add_user(hub, "sender", "RJZ", ["sender"])
    files = make_study(tmp_path / "s", series=1, instances_per_series=2, modality="MR", rows=256, columns=256)
    pieces = multipart_body(files, "b0und")
    body = b"".join(pieces)
    sock = connect(hub, timeout=60)
    sock.sendall(
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token(hub, 'sender')}\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b0und\r\n'
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + pieces[0]
        + pieces[1]
    )

    def indexed() -> int:
        with hub.db.sessions() as s:
            return len(s.scalars(select(Instance.id)).all())

    # the first instance is stored and indexed while the rest of the request is still owed
    wait_until(lambda: indexed() == 1, timeout=30, message="the first part stored before the body ended")
    sock.sendall(b"".join(pieces[2:]))
    status, _ = read_head(sock)
    assert status == 200 and indexed() == 2
    sock.close()
    assert list(Path(hub.store.tmp).glob("in-*")) == []  # no spooled part left behind
    # a body cut short: what arrived whole is kept, the rest refused, and no file is left
    more = make_study(tmp_path / "t", series=1, instances_per_series=2, modality="MR")
    pieces = multipart_body(more, "b0und")
    cut = httpx.post(
        f"{base_url(hub)}/dicomweb/studies",
        content=b"".join(pieces[:2]) + b"DICM half a part",
        headers={
            "Authorization": f"Bearer {token(hub, 'sender')}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0und',
        },
    )
    assert cut.status_code == 400 and "closing boundary" in cut.json()["detail"]
    assert indexed() == 3 and list(Path(hub.store.tmp).glob("in-*")) == []
