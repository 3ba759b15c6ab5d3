"""Nothing shown to someone who may not see it: real studies routed between two hospitals, users at a
third, and every API route walked (from the OpenAPI schema) with IDs that belong to other institutions."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import AuditEvent, Node, Study, Transfer, User, Worklist
from imex.directory import add_institution
from imex.samples import make_study
from portaltools import add_user, bearer, browser


@pytest.fixture
def exchange(make_config, start_hub, storescp, tmp_path):
    """King's (RJZ) sent a CT to Imperial (RYJ); a second study from King's sits in quarantine; Barts
    (RRV) has users and a node but no part in either."""
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    add_institution(hub.db, "RRV", "Barts Health")
    from imex.directory import add_node

    add_node(hub.db, "BARTS_PACS", "BARTSPACS", "127.0.0.1", 104, "RRV")
    hub.nodes.invalidate()
    files = make_study(
        tmp_path / "ct",
        instances_per_series=3,
        patient_name="EXCHANGE^ALICE",
        patient_id="K123",
        accession="ACC1",
        modality="CT",
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery")
    lost = make_study(
        tmp_path / "mr",
        instances_per_series=2,
        patient_name="NOWHERE^BOB",
        patient_id="K999",
        accession="ACC2",
        modality="MR",
    )
    assert peers.storescu(lost, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 2
    wait_until(lambda: _count(hub, Study, Study.route_state == "quarantined") == 1, message="quarantine")
    for name, ods, roles in (
        ("kings_admin", "RJZ", ["institution_admin", "auditor"]),
        ("imperial_viewer", "RYJ", ["viewer"]),
        ("barts_admin", "RRV", ["institution_admin", "auditor"]),
        ("operator", "RJZ", ["system_admin"]),
    ):
        add_user(hub, name, ods, roles)
    with hub.db.sessions() as s:
        s.add(
            Worklist(
                institution_id=s.scalar(select(Node.institution_id).where(Node.name == "IMPERIAL_PACS")),
                name="CT only",
                modalities="CT",
            )
        )
        s.commit()
    return hub


def _count(hub, model, *where) -> int:
    with hub.db.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _ids(hub) -> dict[str, int]:
    with hub.db.sessions() as s:
        return {
            "transfer_id": s.scalar(select(Transfer.id)),
            "study_id": s.scalar(select(Study.id).where(Study.route_state == "quarantined")),
            "delivered_study": s.scalar(select(Transfer.study_id)),
            "node_id": s.scalar(select(Node.id).where(Node.name == "KINGS_PACS")),
            "user_id": s.scalar(select(User.id).where(User.username == "kings_admin")),
            "worklist_id": s.scalar(select(Worklist.id)),
            "institution_id": s.scalar(select(Node.institution_id).where(Node.name == "KINGS_PACS")),
        }


def test_each_institution_sees_its_own_side_of_the_exchange(exchange):
    ryj = bearer(exchange, "imperial_viewer")
    incoming = ryj.get("/api/v1/transfers", params={"direction": "incoming"}).json()
    assert incoming["total"] == 1
    row = incoming["items"][0]
    assert row["patient_name"] == "EXCHANGE, Alice" and row["images"] == 3 and row["state"] == "delivered"
    assert row["source"]["ods"] == "RJZ" and row["destination"]["ods"] == "RYJ" and row["direction"] == "incoming"
    assert ryj.get("/api/v1/transfers", params={"direction": "outgoing"}).json()["total"] == 0
    assert ryj.get("/api/v1/quarantine").status_code == 403  # a viewer does not manage quarantine

    rjz = bearer(exchange, "kings_admin")
    outgoing = rjz.get("/api/v1/transfers", params={"direction": "outgoing"}).json()
    assert [t["patient_id"] for t in outgoing["items"]] == ["K123"]
    assert [s["patient_id"] for s in rjz.get("/api/v1/quarantine").json()["items"]] == ["K999"]

    rrv = bearer(exchange, "barts_admin")
    assert rrv.get("/api/v1/transfers").json() == {"total": 0, "items": []}
    assert rrv.get("/api/v1/quarantine").json()["total"] == 0
    assert [n["name"] for n in rrv.get("/api/v1/nodes").json()] == ["BARTS_PACS"]
    assert [u["username"] for u in rrv.get("/api/v1/users").json()] == ["barts_admin"]

    everyone = bearer(exchange, "operator").get("/api/v1/transfers").json()
    assert everyone["total"] == 1


def test_viewer_cannot_manage_and_the_refusal_is_audited(exchange):
    ids = _ids(exchange)
    ryj = bearer(exchange, "imperial_viewer")
    answer = ryj.post(f"/api/v1/transfers/{ids['transfer_id']}/cancel", json={"reason": "x"})
    assert answer.status_code == 403 and "transfers.manage" in answer.json()["detail"]
    assert _count(exchange, Transfer, Transfer.state == "delivered") == 1
    assert (
        _count(
            exchange,
            AuditEvent,
            AuditEvent.username == "imperial_viewer",
            AuditEvent.outcome == "denied",
            AuditEvent.object_id == "transfers.manage",
        )
        == 1
    )


def _example(schema: dict, components: dict):  # type: ignore[no-untyped-def]
    """A smallest valid value for a JSON schema (enough to get past validation to the visibility check)."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[1]], components)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return _example(options[0], components)
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(schema["properties"][name], components) for name in schema.get("required", [])}
    if kind == "array":
        return [_example(schema.get("items", {"type": "string"}), components)] * max(schema.get("minItems", 1), 1)
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "boolean":
        return False
    if "enum" in schema:
        return schema["enum"][0]
    return "a" * max(schema.get("minLength", 1), 6 if schema.get("maxLength", 99) >= 6 else 1)


def _exchange_ids(hub, ids: dict) -> dict:  # type: ignore[no-untyped-def,type-arg]
    from imex.db.models import Institution
    from imex.exchanges.transactions import open_transaction

    with hub.db.engine.begin() as conn:
        ryj = conn.execute(select(Institution.id).where(Institution.ods_code == "RYJ")).scalar_one()
        uid = conn.execute(select(Study.study_uid).where(Study.id == ids["delivered_study"])).scalar_one()
        tid = open_transaction(
            conn,
            kind="push",
            source_institution_id=ids["institution_id"],
            destination_institution_id=ryj,
            sender_user_id=None,
            sender_name="kings_admin",
            study_uids=[uid],
            message="EXCHANGE note",
        )
    doc = bearer(hub, "kings_admin").post(
        "/api/v1/attachments",
        data={"transaction_id": str(tid)},
        files={"file": ("note.txt", b"EXCHANGE K123 note", "text/plain")},
    )
    assert doc.status_code == 201, doc.text
    return {"transaction_id": tid, "attachment_id": doc.json()["id"], "study_uid": uid}


def _locator_ids(hub, ids: dict) -> dict:  # type: ignore[no-untyped-def,type-arg]
    from imex.db.models import LocatorEntry
    from imex.locator.entries import Holding, upsert

    with hub.db.engine.begin() as conn:
        upsert(
            conn,
            Holding(
                institution_id=ids["institution_id"],
                nhs_number="9434765919",
                study_uid="1.2.3.4.5",
                source="hl7",
                birth_date="19700101",
                description="EXCHANGE locator",
            ),
        )
        entry = conn.execute(select(LocatorEntry.id).where(LocatorEntry.study_uid == "1.2.3.4.5")).scalar_one()
    return {"entry_id": entry, "name": "Kings network"}


def test_every_route_answers_404_for_another_institutions_ids(exchange):
    """Barts' admin (who may manage users, nodes, quarantine and read audit) tries every path with IDs of
    King's and Imperial's objects: every answer is 404 or 403, none leaks a patient, each is audited."""
    ids = _ids(exchange)
    kings_token = bearer(exchange, "kings_admin").get("/api/v1/auth/tokens").json()[0]["id"]
    from imex.folders.manage import add_folder

    folder = add_folder(exchange.db, "Kings and Imperial", "elective", institutions_ods=["RJZ", "RYJ"], owner_ods="RJZ")
    link = bearer(exchange, "kings_admin").post(
        "/api/v1/links",
        json={
            "study_id": ids["delivered_study"],
            "email": "patient@outside.example",
            "mode": "view",
            "send_email": False,
        },
    )
    assert link.status_code == 201, link.text
    values = {**ids, "token_id": kings_token, "role": "sender", "folder_id": folder, "link_id": link.json()["id"]}
    values["request_id"] = (
        bearer(exchange, "kings_admin")
        .post(
            "/api/v1/requests",
            json={  # an image request
                "source": "RYJ",
                "patient_name": "EXCHANGE^ALICE",
                "birth_date": "19700101",
                "reason": "comparison",
            },
        )
        .json()["id"]
    )
    values.update(_exchange_ids(exchange, ids))  # an exchange of King's to Imperial, with a document
    values.update(_locator_ids(exchange, ids))  # a study King's holds, in the locator, discoverable by nobody
    values["upload_id"] = bearer(exchange, "kings_admin").post("/api/v1/uploads").json()["id"]  # King's upload
    values.update(queue="delivery", job_id=ids["transfer_id"])  # the hub's queues: system admins only
    barts = bearer(exchange, "barts_admin")
    schema = barts.get("/api/v1/openapi.json").json()
    components = schema.get("components", {}).get("schemas", {})
    denied_before = _count(exchange, AuditEvent, AuditEvent.username == "barts_admin", AuditEvent.outcome == "denied")
    tried = []
    for path, operations in schema["paths"].items():
        params = re.findall(r"{(\w+)}", path)
        if not params:
            continue
        for method, op in operations.items():
            url = path
            for name in params:
                value = (
                    values["study_id"]
                    if name == "study_id" and "quarantine" in path
                    else values["delivered_study" if name == "study_id" else name]
                )
                url = url.replace("{" + name + "}", str(value))
            body = None
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                body = _example(content["schema"], components)
            answer = barts.request(method.upper(), url, json=body)
            tried.append((method.upper(), url, answer.status_code))
            assert answer.status_code in (403, 404), (method, url, answer.status_code, answer.text)
            assert "EXCHANGE" not in answer.text and "K123" not in answer.text and "K999" not in answer.text
    assert len(tried) >= 15, tried
    denied_after = _count(exchange, AuditEvent, AuditEvent.username == "barts_admin", AuditEvent.outcome == "denied")
    # every refusal of an object (not the token of another user, which is simply not theirs) is audited
    assert denied_after - denied_before >= len([t for t in tried if "/auth/tokens/" not in t[1]])
    # and nothing changed: the transfer is still delivered, the quarantined study still there, the node kept
    assert _count(exchange, Transfer, Transfer.state == "delivered") == 1
    assert _count(exchange, Study, Study.route_state == "quarantined") == 1
    assert _count(exchange, Node, Node.name == "KINGS_PACS") == 1
    assert _count(exchange, User, User.username == "kings_admin", User.disabled.is_(False)) == 1


def test_pages_are_scoped_like_the_api(exchange):
    ids = _ids(exchange)
    barts = browser(exchange, "barts_admin")
    assert barts.get(f"/transfers/{ids['transfer_id']}").status_code == 404
    page = barts.get(f"/studies/{ids['delivered_study']}")
    assert page.status_code == 404 and "EXCHANGE" not in page.text and "Not found" in page.text
    assert "EXCHANGE" not in barts.get("/worklist?direction=all").text
    imperial = browser(exchange, "imperial_viewer")
    worklist = imperial.get("/worklist")
    assert "EXCHANGE, Alice" in worklist.text and "NOWHERE" not in worklist.text
    study = imperial.get(f"/studies/{ids['delivered_study']}")
    assert study.status_code == 200 and "ACC1" in study.text
    assert (
        _count(exchange, AuditEvent, AuditEvent.username == "imperial_viewer", AuditEvent.action == "study.view") == 1
    )
