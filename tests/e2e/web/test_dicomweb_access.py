"""Who may use DICOMweb: another institution's study by UID is 404 in every route (as if it did not
exist, and the attempt audited), a user without a viewing permission gets 403, and an expired or revoked
bearer token, or none, gets 401. A browser session works too, with the portal's CSRF check on STOW."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pydicom
import pytest
from sqlalchemy import func, select, update

from dwtools import BIG_BODY, base_url, browser, exchange, token
from imex.db.models import AuditEvent, WebSession
from imex.samples import make_study


@pytest.fixture
def sent(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(http__max_body_bytes=BIG_BODY))
    files = make_study(tmp_path / "ct", series=1, instances_per_series=2, modality="CT", patient_id="K123")
    exchange(hub, dest.port, files)
    hub.test_files = files  # type: ignore[attr-defined]
    return hub


def dicomweb_routes() -> list[tuple[str, str]]:
    from imex.web.dicomweb import qido, stow, wado

    return [
        (m, route.path)
        for module in (qido, wado, stow)
        for route in module.router.routes
        for m in sorted(route.methods)
    ]  # type: ignore[attr-defined]


def _fill(path: str, ds) -> str:  # type: ignore[no-untyped-def]
    return (
        path.replace("{study_uid}", ds.StudyInstanceUID)
        .replace("{series_uid}", ds.SeriesInstanceUID)
        .replace("{sop_uid}", ds.SOPInstanceUID)
        .replace("{frames}", "1")
        .replace("{frame}", "1")
    )


def _post_body(ds_path) -> tuple[bytes, dict[str, str]]:  # type: ignore[no-untyped-def]
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + ds_path.read_bytes() + b"\r\n--b--\r\n"
    return body, {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}


def test_every_route_is_scoped(sent):
    ds = pydicom.dcmread(sent.test_files[0])
    routes = dicomweb_routes()
    assert len(routes) >= 20
    with_uid = [(m, p) for m, p in routes if "{study_uid}" in p]
    assert len(with_uid) >= 15
    mine = httpx.Client(base_url=base_url(sent), headers={"Authorization": f"Bearer {token(sent, 'imperial_viewer')}"})
    barts = httpx.Client(base_url=base_url(sent), headers={"Authorization": f"Bearer {token(sent, 'barts_sender')}"})
    with sent.db.sessions() as s:
        denied_before = s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "access.denied")
        )
    for method, path in with_uid:
        url = _fill(path, ds)
        if method == "GET":
            assert mine.get(url).status_code == 200, url
            answer = barts.get(url)
        else:
            answer = barts.post(
                url, content=_post_body(sent.test_files[0])[0], headers=_post_body(sent.test_files[0])[1]
            )
        assert answer.status_code == 404, (method, url, answer.status_code)
        assert ds.PatientID not in answer.text
    with sent.db.sessions() as s:
        denied = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "access.denied"))
    assert denied - denied_before == len(with_uid)
    # searches without a UID answer nothing of theirs
    for path in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"):
        assert barts.get(path).json() == [] and len(mine.get(path).json()) >= 1


def test_tokens_expired_revoked_missing_and_permissions(sent):
    ds = pydicom.dcmread(sent.test_files[0])
    url = f"{base_url(sent)}/dicomweb/studies/{ds.StudyInstanceUID}/series"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url).headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Bearer nonsense"}).status_code == 401

    revoked = token(sent, "imperial_viewer")
    headers = {"Authorization": f"Bearer {revoked}"}
    assert httpx.get(url, headers=headers).status_code == 200
    tokens = httpx.get(f"{base_url(sent)}/api/v1/auth/tokens", headers=headers).json()
    for row in tokens:
        assert httpx.delete(f"{base_url(sent)}/api/v1/auth/tokens/{row['id']}", headers=headers).status_code == 200
    assert httpx.get(url, headers=headers).status_code == 401

    expired = token(sent, "imperial_viewer")
    headers = {"Authorization": f"Bearer {expired}"}
    assert httpx.get(url, headers=headers).status_code == 200
    with sent.db.sessions() as s:
        s.execute(update(WebSession).where(WebSession.kind == "token").values(expires_at=dt.datetime(2000, 1, 1)))
        s.commit()
    assert httpx.get(url, headers=headers).status_code == 401

    auditor = {"Authorization": f"Bearer {token(sent, 'kings_auditor')}"}
    assert httpx.get(url, headers=auditor).status_code == 403
    assert httpx.get(f"{base_url(sent)}/dicomweb/studies", headers=auditor).status_code == 403


def test_browser_session_and_csrf(sent, tmp_path):
    page = browser(sent, "kings_sender")
    ds = pydicom.dcmread(sent.test_files[0])
    assert page.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series").status_code == 200
    new = make_study(tmp_path / "new", series=1, instances_per_series=1, modality="MR")
    body, headers = _post_body(new[0])
    csrf = page.headers.pop("X-CSRF-Token")
    assert page.post("/dicomweb/studies", content=body, headers=headers).status_code == 403
    assert page.post("/dicomweb/studies", content=body, headers={**headers, "X-CSRF-Token": csrf}).status_code == 200
    assert re.fullmatch(r"[0-9a-zA-Z_\-]+", csrf)
