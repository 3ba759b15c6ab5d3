"""Helpers of the link tests: a hub with two studies of King's (RJZ), one sent to Imperial (RYJ), a third
institution (RRK), users with and without links.manage, and a link recipient's HTTP flow."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pydicom
import pytest
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import Email, Study
from imex.directory import add_institution
from imex.samples import make_study
from portaltools import add_user, base_url, browser


def push_studies(hub: Any, tmp_path: Any) -> None:
    ct = make_study(
        tmp_path / "ct",
        series=2,
        instances_per_series=3,
        rows=64,
        columns=64,
        patient_name="LINK^LILY",
        patient_id="L1",
        accession="ACCLINK1",
        description="CT HEAD",
    )
    other = make_study(
        tmp_path / "mr",
        series=1,
        instances_per_series=2,
        rows=64,
        columns=64,
        patient_name="OTHER^OTTO",
        patient_id="O2",
        accession="ACCLINK2",
        description="MR KNEE",
    )
    assert peers.storescu(ct + other, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 8
    wait_until(
        lambda: [t[0] for t in transfer_states(hub)] == ["delivered", "delivered"], timeout=60, message="delivery"
    )
    hub.study_uids = [pydicom.dcmread(ct[0]).StudyInstanceUID, pydicom.dcmread(other[0]).StudyInstanceUID]


def setup_hub(hub: Any, tmp_path: Any) -> Any:
    add_institution(hub.db, "RRK", "Birmingham")
    push_studies(hub, tmp_path)
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    add_user(hub, "kings_sender", "RJZ", ["sender"])
    add_user(hub, "kings_viewer", "RJZ", ["viewer"])
    add_user(hub, "brum_admin", "RRK", ["institution_admin"])
    return hub


def study(hub: Any, index: int = 0) -> Study:
    with hub.db.sessions() as s:
        return s.scalar(select(Study).where(Study.study_uid == hub.study_uids[index]))


def make_link(
    hub: Any, who: str = "kings_admin", mode: str = "download", email: str = "pat@outside.example", index: int = 0
) -> dict[str, Any]:
    client = browser(hub, who)
    answer = client.post("/api/v1/links", json={"study_id": study(hub, index).id, "email": email, "mode": mode})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def outbox_codes(hub: Any, email: str) -> list[str]:
    """The one-time codes e-mailed to `email` (read from the outbox), oldest first."""
    with hub.db.sessions() as s:
        bodies = s.scalars(select(Email.body).where(Email.recipient == email).order_by(Email.id)).all()
    return [m.group(1) for body in bodies for m in [re.search(r"one-time code is (\d{6})", body)] if m]


def form_token(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def recipient(hub: Any) -> httpx.Client:
    return httpx.Client(base_url=base_url(hub), follow_redirects=False, timeout=30)


def ask_code(client: httpx.Client, url: str) -> httpx.Response:
    path = httpx.URL(url).path
    opened = client.get(path)
    assert opened.status_code == 200, opened.text
    return client.post(path + "/code", data={"csrf_token": form_token(opened)})


def sign_in_link(hub: Any, link: dict[str, Any], client: httpx.Client | None = None) -> httpx.Client:
    """Open the link, ask for a code, enter it: a client holding a link session."""
    client = client or recipient(hub)
    sent = ask_code(client, link["url"])
    assert sent.status_code == 200, sent.text
    code = outbox_codes(hub, link["email"])[-1]
    done = client.post(httpx.URL(link["url"]).path + "/session", data={"code": code, "csrf_token": form_token(sent)})
    assert done.status_code == 303 and done.headers["location"] == "/link/study", done.text
    return client


@pytest.fixture
def linkhub(make_config, start_hub, storescp, tmp_path):  # type: ignore[no-untyped-def]
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    return setup_hub(hub, tmp_path)
