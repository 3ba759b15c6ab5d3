"""Links for outside recipients, through HTTP: creating (CSRF, scoping, permissions, malformed input),
the code flow (single use, expiry, wrong codes lock the link, rate limit, forged forms), the link session
scoped to one study (other UIDs 404), download by mode, expiry and revocation, and the audit of every use."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import httpx
from sqlalchemy import select, update

from imex.db.models import AuditEvent, Email, Instance, LinkCode, LinkSession, Series, StudyLink, utcnow
from linktools import ask_code, form_token, make_link, outbox_codes, recipient, sign_in_link, study
from portaltools import bearer, browser


def _audit(hub, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_create_list_and_the_mail_to_the_recipient(linkhub):  # type: ignore[no-untyped-def]
    link = make_link(linkhub)
    assert link["state"] == "active" and link["mode"] == "download" and "/l/" in link["url"]
    token = link["url"].rsplit("/", 1)[1]
    assert len(token) >= 40
    expires = dt.datetime.fromisoformat(link["expires_at"])
    assert dt.timedelta(days=13, hours=23) < expires - utcnow() <= dt.timedelta(days=14)
    with linkhub.db.sessions() as s:
        row = s.get(StudyLink, link["id"])
        assert token not in row.token_hash and len(row.token_hash) == 64  # only the hash is kept
        mail = s.scalar(select(Email).where(Email.recipient == "pat@outside.example"))
    assert link["url"] in mail.body
    for identifier in ("LINK", "LILY", "L1", "ACCLINK1", "CT HEAD"):
        assert identifier not in mail.body and identifier not in mail.subject
    listed = browser(linkhub, "kings_sender").get(f"/api/v1/links?study_id={study(linkhub).id}").json()
    assert [x["id"] for x in listed] == [link["id"]] and "url" not in listed[0]
    page = browser(linkhub, "kings_admin").get(f"/studies/{study(linkhub).id}")
    assert "pat@outside.example" in page.text and 'id="link-form"' in page.text
    assert _audit(linkhub, "link.create")[0].username == "kings_admin"


def test_creating_is_refused_without_csrf_permission_or_scope(linkhub):  # type: ignore[no-untyped-def]
    body = {"study_id": study(linkhub).id, "email": "x@outside.example", "mode": "view"}
    client = browser(linkhub, "kings_admin")
    forged = httpx.post(f"{client.base_url}/api/v1/links", json=body, cookies=client.cookies)
    assert forged.status_code == 403
    cross = client.post("/api/v1/links", json=body, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert browser(linkhub, "kings_viewer").post("/api/v1/links", json=body).status_code == 403
    other = browser(linkhub, "brum_admin").post("/api/v1/links", json=body)
    assert other.status_code == 404
    assert bearer(linkhub, "brum_admin").post("/api/v1/links", json=body).status_code == 404
    for bad in (
        {**body, "email": "not an address"},
        {**body, "email": "a@b.c, d@e.f"},
        {**body, "mode": "edit"},
        {**body, "days": 0},
        {**body, "days": 91},
        {**body, "study_id": "1 OR 1=1"},
        {**body, "study_id": 2**40},
        {**body, "email": "x" * 400 + "@a.example"},
    ):
        assert client.post("/api/v1/links", json=bad).status_code == 422, bad
    # a sender (no studies.download) may share to view, not to download
    assert browser(linkhub, "kings_sender").post("/api/v1/links", json={**body, "mode": "download"}).status_code == 422
    with linkhub.db.sessions() as s:
        assert s.scalar(select(StudyLink)) is None
    denied = [e.username for e in _audit(linkhub, "access.denied")]
    assert "brum_admin" in denied and "kings_viewer" in denied
    # another institution can neither see nor revoke a link
    link = make_link(linkhub)
    assert bearer(linkhub, "brum_admin").get(f"/api/v1/links/{link['id']}").status_code == 404
    assert browser(linkhub, "brum_admin").post(f"/api/v1/links/{link['id']}/revoke").status_code == 404
    assert bearer(linkhub, "brum_admin").get("/api/v1/links").json() == []


def test_code_flow_viewer_reads_and_download(linkhub, tmp_path):  # type: ignore[no-untyped-def]
    link = make_link(linkhub)
    client = sign_in_link(linkhub, link)
    cookie = next(c for c in client.cookies.jar if c.name == "imex_link")
    assert cookie.path == "/link" and cookie.has_nonstandard_attr("HttpOnly")
    page = client.get("/link/study")
    assert page.status_code == 200 and 'id="viewer"' in page.text and 'href="/link/download"' in page.text
    uid, other_uid = linkhub.study_uids
    base = f"/link/dicomweb/studies/{uid}"
    series = client.get(f"{base}/series").json()
    assert len(series) == 2
    series_uid = series[0]["0020000E"]["Value"][0]
    meta = client.get(f"{base}/series/{series_uid}/metadata").json()
    assert len(meta) == 3
    sop = meta[0]["00080018"]["Value"][0]
    frame = client.get(f"{base}/series/{series_uid}/instances/{sop}/frames/1/rendered?accept=image/png")
    assert frame.status_code == 200 and frame.content.startswith(b"\x89PNG")
    assert client.get(f"{base}/series/{series_uid}/thumbnail?accept=image/png").status_code == 200
    # the other study, its series and its instances are not there, whatever URL is used
    with linkhub.db.sessions() as s:
        o_series, o_sop = s.execute(
            select(Series.series_uid, Instance.sop_uid).join(Instance).where(Series.study_id == study(linkhub, 1).id)
        ).first()
    for path in (
        f"/link/dicomweb/studies/{other_uid}/series",
        f"/link/dicomweb/studies/{other_uid}/series/{o_series}/metadata",
        f"{base}/series/{o_series}/metadata",
        f"{base}/series/{o_series}/thumbnail",
        f"{base}/series/{series_uid}/instances/{o_sop}/frames/1/rendered",
        f"{base}/series/{o_series}/instances/{o_sop}/frames/1/rendered",
        f"/link/dicomweb/studies/{uid}' OR '1'='1/series",
        "/link/dicomweb/studies/" + "9" * 5000 + "/series",
    ):
        answer = client.get(path)
        assert answer.status_code in (404, 414), (path, answer.status_code)
    # the portal's own DICOMweb does not take a link session
    assert client.get(f"/dicomweb/studies/{uid}/series").status_code == 401
    assert any(
        "not the link's" in e.detail or "not in the link's" in e.detail for e in _audit(linkhub, "link.access_denied")
    )
    # download: the zip's DICOMDIR lists every instance, with the stored bytes
    answer = client.get("/link/download")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.namelist()[0] == "DICOMDIR" and len(archive.namelist()) == 7
    with linkhub.db.sessions() as s:
        stored = {
            i.sop_uid: linkhub.store.read(i.blob_key)
            for i in s.scalars(select(Instance).where(Instance.study_id == study(linkhub).id))
        }
    archive.extractall(tmp_path / "zip")
    from pydicom.fileset import FileSet

    fs = FileSet(tmp_path / "zip" / "DICOMDIR")
    assert {i.SOPInstanceUID for i in fs} == set(stored)
    for inst in fs:
        assert (tmp_path / "zip" / inst.FileID).read_bytes() == stored[inst.SOPInstanceUID]
    # every use is audited with the link and the address, in the creating institution's trail
    for action in ("link.open", "link.code_sent", "link.code_ok", "link.view", "link.download"):
        events = _audit(linkhub, action)
        assert events, action
        assert all(
            e.object_id == str(link["id"]) and "pat@outside.example" in e.detail and e.institution_id for e in events
        )
    listed = bearer(linkhub, "kings_admin").get(f"/api/v1/links/{link['id']}").json()
    assert listed["uses"] == 1


def test_view_only_link_cannot_download(linkhub):  # type: ignore[no-untyped-def]
    link = make_link(linkhub, "kings_sender", mode="view", email="solicitor@law.example")
    client = sign_in_link(linkhub, link)
    assert 'href="/link/download"' not in client.get("/link/study").text
    answer = client.get("/link/download")
    assert answer.status_code == 403 and b"DICM" not in answer.content
    assert _audit(linkhub, "link.download")[-1].outcome == "denied"


def test_codes_are_single_use_expire_and_wrong_ones_lock_the_link(linkhub):  # type: ignore[no-untyped-def]
    link = make_link(linkhub, email="gp@elsewhere.example")
    path = httpx.URL(link["url"]).path
    client = recipient(linkhub)
    sent = ask_code(client, link["url"])
    code = outbox_codes(linkhub, "gp@elsewhere.example")[-1]
    token = form_token(sent)
    # a forged form (no token, or from another site) is refused and counts nothing
    assert client.post(path + "/session", data={"code": code}).status_code == 403
    assert (
        client.post(
            path + "/session", data={"code": code, "csrf_token": token}, headers={"Origin": "https://evil.example"}
        ).status_code
        == 403
    )
    assert client.post(path + "/code", data={"csrf_token": "forged"}).status_code == 403
    assert client.post(path + "/session", data={"code": code, "csrf_token": token}).status_code == 303
    again = recipient(linkhub)
    page = again.get(path)
    reused = again.post(path + "/session", data={"code": code, "csrf_token": form_token(page)})
    assert reused.status_code == 400 and "wrong or has expired" in reused.text
    # an expired code does not work
    sent = ask_code(again, link["url"])
    late = outbox_codes(linkhub, "gp@elsewhere.example")[-1]
    with linkhub.db.session() as s:
        s.execute(update(LinkCode).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    answer = again.post(path + "/session", data={"code": late, "csrf_token": form_token(sent)})
    assert answer.status_code == 400
    # wrong codes: the fifth locks the link (two were already wrong above); each page has a fresh form token
    for attempt in range(3):
        answer = again.post(path + "/session", data={"code": f"{attempt:06d}x", "csrf_token": form_token(answer)})
    assert answer.status_code == 410 and "locked" in answer.text
    assert again.get(path).status_code == 410
    assert client.get("/link/study").status_code == 401  # the session opened before is over too
    listed = bearer(linkhub, "kings_admin").get(f"/api/v1/links/{link['id']}").json()
    assert listed["state"] == "locked" and listed["failed_codes"] == 5
    assert len(_audit(linkhub, "link.code_wrong")) == 5


def test_codes_are_rate_limited(linkhub):  # type: ignore[no-untyped-def]
    link = make_link(linkhub, email="many@outside.example")
    client = recipient(linkhub)
    answers = [ask_code(client, link["url"]).status_code for _ in range(6)]
    assert answers == [200] * 5 + [429]
    assert len(outbox_codes(linkhub, "many@outside.example")) == 5


def test_expired_and_revoked_links_show_a_page_not_the_study(linkhub):  # type: ignore[no-untyped-def]
    expiring = make_link(linkhub, email="a@outside.example")
    revoked = make_link(linkhub, email="b@outside.example")
    first, second = sign_in_link(linkhub, expiring), sign_in_link(linkhub, revoked)
    with linkhub.db.session() as s:
        s.execute(
            update(StudyLink)
            .where(StudyLink.id == expiring["id"])
            .values(expires_at=utcnow() - dt.timedelta(minutes=1))
        )
    answer = first.get(httpx.URL(expiring["url"]).path)
    assert answer.status_code == 410 and "expired" in answer.text and "LINK" not in answer.text
    assert first.get("/link/study").status_code == 401
    assert first.get(f"/link/dicomweb/studies/{linkhub.study_uids[0]}/series").status_code == 401
    assert first.get("/link/download").status_code == 401
    done = browser(linkhub, "kings_admin").post(f"/api/v1/links/{revoked['id']}/revoke")
    assert done.status_code == 200 and done.json()["state"] == "revoked"
    assert second.get("/link/study").status_code == 401
    answer = second.get(httpx.URL(revoked["url"]).path)
    assert answer.status_code == 410 and "withdrawn" in answer.text
    with linkhub.db.sessions() as s:
        assert s.scalar(select(LinkSession).where(LinkSession.link_id == revoked["id"])) is None
    assert _audit(linkhub, "link.revoke")[0].username == "kings_admin"
    # unknown and malformed tokens
    for token in ("x" * 43, "short", "../../etc/passwd", "%00" * 10, "a" * 3000):
        assert recipient(linkhub).get(f"/l/{token}").status_code in (404, 414)


def test_links_on_postgresql(make_config, start_hub, storescp, postgres_url, tmp_path):  # type: ignore[no-untyped-def]
    """The same flow with PostgreSQL: create, code, session, a read, download, lock after wrong codes."""
    from hubtools import register_hospitals
    from linktools import setup_hub

    dest = storescp("RYJPACS")
    hub = start_hub(make_config(database__url=postgres_url))
    register_hospitals(hub, dest_port=dest.port)
    setup_hub(hub, tmp_path)
    link = make_link(hub)
    client = sign_in_link(hub, link)
    assert client.get(f"/link/dicomweb/studies/{hub.study_uids[0]}/series").status_code == 200
    assert client.get(f"/link/dicomweb/studies/{hub.study_uids[1]}/series").status_code == 404
    assert client.get("/link/download").content[:2] == b"PK"
    path = httpx.URL(link["url"]).path
    stranger = recipient(hub)
    answer = ask_code(stranger, link["url"])
    for _ in range(5):
        answer = stranger.post(path + "/session", data={"code": "000000", "csrf_token": form_token(answer)})
    assert answer.status_code == 410
    assert bearer(hub, "kings_admin").get(f"/api/v1/links/{link['id']}").json()["state"] == "locked"


def test_link_pages_refuse_malformed_input(linkhub):  # type: ignore[no-untyped-def]
    link = make_link(linkhub, email="odd@outside.example")
    path = httpx.URL(link["url"]).path
    client = recipient(linkhub)
    sent = ask_code(client, link["url"])
    token = form_token(sent)
    for data in (
        {"code": "1" * 5000, "csrf_token": token},
        {"csrf_token": token},
        {"code": "123456", "csrf_token": "x" * 500},
    ):
        answer = client.post(path + "/session", data=data)
        assert answer.status_code in (403, 422), (data.keys(), answer.status_code)
    assert client.post(
        path + "/session", content=b"\xff" * 100, headers={"content-type": "application/x-www-form-urlencoded"}
    ).status_code in (403, 422)
    oversize = client.post(
        path + "/session",
        content=b"code=" + b"1" * (linkhub.config["http.max_body_bytes"] + 10),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert oversize.status_code == 413
    # a forged or stale link cookie opens nothing
    for cookie in ("forged", "A" * 43, "a" * 5000):
        stranger = recipient(linkhub)
        stranger.cookies.set("imex_link", cookie, path="/link")
        assert stranger.get("/link/study").status_code == 401
        assert stranger.get(f"/link/dicomweb/studies/{linkhub.study_uids[0]}/series").status_code == 401
    # inside a session: nonsense frame numbers and render options
    client = sign_in_link(linkhub, make_link(linkhub, email="odd2@outside.example"))
    base = f"/link/dicomweb/studies/{linkhub.study_uids[0]}"
    series_uid = client.get(f"{base}/series").json()[0]["0020000E"]["Value"][0]
    sop = client.get(f"{base}/series/{series_uid}/metadata").json()[0]["00080018"]["Value"][0]
    for tail in (
        "frames/0/rendered",
        "frames/abc/rendered",
        "frames/99/rendered",
        "frames/1/rendered?window=a,b",
        "frames/1/rendered?viewport=0,0",
        "frames/1/rendered?accept=text/html",
    ):
        answer = client.get(f"{base}/series/{series_uid}/instances/{sop}/{tail}")
        assert answer.status_code in (400, 404, 406), (tail, answer.status_code)
        assert answer.headers["content-type"].startswith("application/problem+json")
    with linkhub.db.sessions() as s:
        assert s.scalar(select(StudyLink).where(StudyLink.email == "odd@outside.example")).failed_codes == 0
