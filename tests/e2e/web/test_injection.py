"""SQL and HTML injection in every search field: nothing extra matches, nothing runs, the page shows the
text escaped, and the data are intact; the query string cannot reach another institution's objects."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import User
from imex.samples import make_study
from portaltools import add_user, bearer, browser

HOSTILE = [
    "' OR '1'='1",
    "%",
    "_",
    "\\",
    "'; DROP TABLE users; --",
    '" OR ""="',
    "<script>alert(1)</script>",
    "*",
    "K1%' --",
    "%' UNION SELECT username FROM users --",
]


@pytest.fixture
def hub(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(
        tmp_path / "ct",
        instances_per_series=1,
        patient_name="SEARCH^SAM",
        patient_id="K1",
        accession="ACC1",
        modality="CT",
        description="CT HEAD",
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 1, 1)], message="delivery")
    add_user(hub, "rad", "RYJ", ["viewer", "auditor"])
    return hub


def test_worklist_search_fields_match_only_literally(hub):
    api = bearer(hub, "rad")
    assert api.get("/api/v1/transfers", params={"q": "SAM"}).json()["total"] == 1  # the control
    for value in HOSTILE:
        for field in ("q", "modality"):
            answer = api.get("/api/v1/transfers", params={field: value})
            assert answer.status_code in (200, 422), (field, value, answer.text)
            if answer.status_code == 200:
                assert answer.json()["total"] == 0, (field, value)
        for field in ("date_from", "date_to"):
            assert api.get("/api/v1/transfers", params={field: value}).status_code == 422
    for value in HOSTILE:
        for field in ("username", "action", "patient_id", "study_uid"):
            answer = api.get("/api/v1/audit", params={field: value})
            assert answer.status_code == 200 and answer.json()["total"] == 0, (field, value, answer.text)
        # free text finds only events that hold the text literally (the searches above were audited)
        found = api.get("/api/v1/audit", params={"text": value}).json()["items"]
        assert all(value in e["detail"] + e["object_id"] + e["action"] for e in found), (value, found)
    with hub.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1  # the table is there, untouched


def test_search_text_is_escaped_in_the_page(hub):
    page = browser(hub, "rad").get("/worklist", params={"q": "<script>alert(1)</script>", "modality": '"><b>x'})
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert '"><b>x' not in page.text and "&#34;&gt;&lt;b&gt;x" in page.text
    bad_date = browser(hub, "rad").get("/worklist", params={"date_from": "<b>2024"})
    assert bad_date.status_code == 422 and "<b>2024" not in bad_date.text and "YYYYMMDD" in bad_date.text


def test_query_string_cannot_reach_another_institutions_worklist_or_trail(hub):
    add_user(hub, "kings_admin", "RJZ", ["institution_admin", "auditor"])
    kings = bearer(hub, "kings_admin")
    other = kings.post("/api/v1/worklists", json={"name": "Kings CT", "modalities": "CT"})
    assert other.status_code == 201, other.text
    rad = bearer(hub, "rad")
    assert rad.get("/api/v1/transfers", params={"worklist": other.json()["id"]}).status_code == 404
    study_uid = rad.get("/api/v1/transfers").json()["items"][0]["study_uid"]
    # King's actions on this study are King's and Imperial's business; King's token sign-in is not Imperial's
    mine = rad.get("/api/v1/audit", params={"username": "kings_admin"}).json()
    assert all(e["study_uid"] == study_uid for e in mine["items"])
    assert rad.get("/api/v1/audit", params={"action": "worklist.add"}).json()["total"] == 0
