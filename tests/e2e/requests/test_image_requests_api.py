"""Image requests through the API without PACS: who may ask whom, the states and their history, expiry,
and hostile input (another institution's id, the wrong side acting, no CSRF token, a bad NHS number, a
decline without a reason)."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import select, update

from imex.db.models import AuditEvent, ImageRequest, Notification
from imex.directory import add_institution, add_node
from imex.requests import expiry as request_jobs
from portaltools import add_user, base_url, bearer, browser
from requesttools import NHS, request_state

GOOD = {
    "source": "RJZ",
    "nhs_number": "943 476 5919",
    "modality": "CT",
    "date_from": "2024-01-01",
    "reason": "Follow-up of a head injury seen at King's",
    "urgency": "urgent",
    "recipient": "Stroke team",
}


def _hub(make_config, start_hub, **config):  # type: ignore[no-untyped-def]
    hub = start_hub(make_config(**config))
    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    add_institution(hub.db, "RXX", "Not Connected Hospital")  # no DICOM node: takes no part in exchange
    add_institution(hub.db, "RAL", "Royal Free")
    add_node(hub.db, "KINGS_PACS", "RJZPACS", "127.0.0.1", 11112, "RJZ", destination=False)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", 11113, "RYJ")
    add_node(hub.db, "FREE_PACS", "RALPACS", "127.0.0.1", 11114, "RAL")
    add_user(hub, "imp_doc", "RYJ", ["sender"], email="doc@imperial.test")
    add_user(hub, "kings_guard", "RJZ", ["pacs_guardian"], email="guard@kings.test")
    add_user(hub, "kings_view", "RJZ", ["viewer"])
    add_user(hub, "free_doc", "RAL", ["sender", "institution_admin"])
    return hub


def _audited(hub, action: str, outcome: str) -> int:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return len(
            s.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.outcome == outcome)).all()
        )


def test_ask_accept_decline_cancel_and_expire_with_history(make_config, start_hub):
    _lifecycle(_hub(make_config, start_hub))


def test_the_same_on_postgresql(make_config, start_hub, postgres_url):
    _lifecycle(_hub(make_config, start_hub, database__url=postgres_url))


def _lifecycle(hub) -> None:  # type: ignore[no-untyped-def]
    doc, guard = bearer(hub, "imp_doc"), bearer(hub, "kings_guard")
    assert sorted(p["ods"] for p in doc.get("/api/v1/requests/partners").json()) == ["RAL", "RJZ"]

    made = doc.post("/api/v1/requests", json=GOOD)
    assert made.status_code == 201, made.text
    r = made.json()
    assert r["state"] == "open" and r["nhs_number"] == NHS and r["urgency"] == "urgent"
    assert r["date_from"] == "20240101" and r["source"]["ods"] == "RJZ" and r["may"]["cancel"]
    rid = r["id"]

    incoming = guard.get("/api/v1/requests", params={"direction": "incoming", "state": "open"}).json()["items"]
    assert [i["id"] for i in incoming] == [rid] and incoming[0]["may"]["accept"]
    assert guard.get("/api/v1/requests", params={"direction": "outgoing"}).json()["items"] == []
    assert [i["id"] for i in guard.get("/api/v1/dashboard").json()["requests_needing_action"]] == [rid]
    with hub.db.session() as s:  # the guardian was told in the portal
        assert s.scalars(select(Notification.link).where(Notification.kind == "request.new")).all() == [
            f"/requests/{rid}"
        ]

    accepted = guard.post(f"/api/v1/requests/{rid}/accept")
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    assert guard.post(f"/api/v1/requests/{rid}/accept").status_code == 409  # not open any more
    refused = guard.post(f"/api/v1/requests/{rid}/decline", json={"reason": "  "})
    assert refused.status_code == 422 and "reason" in refused.json()["detail"]
    assert guard.post(f"/api/v1/requests/{rid}/decline", json={}).status_code == 422
    declined = guard.post(f"/api/v1/requests/{rid}/decline", json={"reason": "No imaging for this patient here"})
    assert declined.json()["state"] == "declined"
    detail = doc.get(f"/api/v1/requests/{rid}").json()
    assert detail["decline_reason"] == "No imaging for this patient here"
    assert [e["event"] for e in detail["history"]] == ["created", "accepted", "declined"]
    assert doc.post(f"/api/v1/requests/{rid}/cancel").status_code == 409

    second = doc.post(
        "/api/v1/requests", json={**GOOD, "nhs_number": "", "patient_name": "Doe^Jane", "birth_date": "1970-01-01"}
    ).json()
    assert doc.post(f"/api/v1/requests/{second['id']}/cancel").json()["state"] == "cancelled"

    third = doc.post("/api/v1/requests", json=GOOD).json()
    with hub.db.engine.begin() as conn:
        conn.execute(
            update(ImageRequest)
            .where(ImageRequest.id == third["id"])
            .values(expires_at=dt.datetime.utcnow() - dt.timedelta(minutes=1))
        )
    fulfilled, expired = request_jobs.run_once(hub.db)
    assert expired == [third["id"]] and fulfilled == []
    assert request_state(hub, third["id"]) == "expired"
    assert doc.get(f"/api/v1/requests/{third['id']}").json()["history"][-1]["event"] == "expired"
    for action in (
        "request.created",
        "request.accepted",
        "request.declined",
        "request.cancelled",
        "request.expired",
        "request.view",
    ):
        assert _audited(hub, action, "success") >= 1, action


def test_hostile_requests_are_refused_and_audited(make_config, start_hub):
    hub = _hub(make_config, start_hub)
    doc = bearer(hub, "imp_doc")

    for body, words in (
        ({**GOOD, "source": "RYJ"}, "another institution"),
        ({**GOOD, "source": "RXX"}, "does not take part"),
        ({**GOOD, "source": "ZZZ"}, "no institution"),
        ({**GOOD, "nhs_number": "9434765918"}, "modulus 11"),
        ({**GOOD, "nhs_number": "94347659"}, "not 10"),
        ({**GOOD, "nhs_number": ""}, "NHS number, or their name"),
        ({**GOOD, "birth_date": "1970-13-01"}, "YYYYMMDD"),
        ({**GOOD, "recipient_user_id": 4}, "recipient"),
    ):  # a King's user
        answer = doc.post("/api/v1/requests", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert words in answer.json()["detail"], answer.text
    assert doc.post("/api/v1/requests", json={**GOOD, "urgency": "asap"}).status_code == 422
    assert doc.post("/api/v1/requests", json={**GOOD, "reason": "x" * 5000}).status_code == 422
    assert _audited(hub, "request.create", "failure") >= 8

    rid = doc.post("/api/v1/requests", json=GOOD).json()["id"]
    # another institution (Royal Free, which may ask and fulfil requests) sees nothing of it
    free = bearer(hub, "free_doc")
    for method, path in (
        ("GET", ""),
        ("POST", "/accept"),
        ("POST", "/cancel"),
        ("POST", "/search-source"),
        ("POST", "/fulfil"),
    ):
        answer = free.request(
            method, f"/api/v1/requests/{rid}{path}", json={"study_uids": ["1.2.3"]} if path == "/fulfil" else None
        )
        assert answer.status_code == 404, (path, answer.text)
    assert rid not in [i["id"] for i in free.get("/api/v1/requests").json()["items"]]
    assert free.get("/api/v1/requests/999999").status_code == 404
    assert _audited(hub, "access.denied", "denied") >= 6

    # the requester's own side may not accept, decline or fulfil; the source may not cancel
    for path, body in (
        ("/accept", None),
        ("/decline", {"reason": "mine"}),
        ("/fulfil", {"study_uids": ["1.2"]}),
        ("/search-source", None),
    ):
        answer = doc.post(f"/api/v1/requests/{rid}{path}", json=body)
        assert answer.status_code == 403, (path, answer.text)
    assert bearer(hub, "kings_guard").post(f"/api/v1/requests/{rid}/cancel").status_code == 403
    assert bearer(hub, "kings_view").post(f"/api/v1/requests/{rid}/accept").status_code == 403
    assert _audited(hub, "request.denied", "denied") >= 4  # the others lack the permission: access.denied
    guard = bearer(hub, "kings_guard")
    assert guard.post(f"/api/v1/requests/{rid}/fulfil", json={"study_uids": ["1.2; DROP"]}).status_code == 422
    assert guard.post(f"/api/v1/requests/{rid}/fulfil", json={"study_uids": []}).status_code == 422
    # King's PACS node may not be queried/retrieved: a clear message, not a 500
    searched = guard.post(f"/api/v1/requests/{rid}/search-source")
    assert searched.status_code == 422 and "query/retrieve" in searched.json()["detail"]

    # a browser session without its CSRF token changes nothing
    session = browser(hub, "kings_guard")
    forged = httpx.post(f"{base_url(hub)}/api/v1/requests/{rid}/accept", cookies=session.cookies)
    assert forged.status_code == 403
    assert session.post(f"/api/v1/requests/{rid}/accept", headers={"Origin": "http://evil.example"}).status_code == 403
    assert request_state(hub, rid) == "open"
    assert session.post(f"/api/v1/requests/{rid}/accept").json()["state"] == "accepted"
    # page of a request of another institution: 404 too
    other = browser(hub, "free_doc")
    assert other.get(f"/requests/{rid}").status_code == 404
