"""The locator's other feeds and its admin side: a study that passes through the hub is indexed by the
periodic job (source hub); a RIS's completed order (ORM^O01, OMI^O23) and report (ORU^R01) over MLLP index
what its institution holds (source hl7), while an order not yet done, a RIS the hub does not know and
garbage are answered in HL7's own terms; discoverability, networks and sweeps through the API refuse
what a caller may not change."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import peers
from hubtools import wait_until
from imex.directory import add_node
from imex.hl7.client import send
from imex.reports.endpoints import add_ris
from imex.samples import make_study
from locatortools import PATIENT_DOB, PATIENT_NHS, entries, register_pacs
from portaltools import add_user, base_url, bearer, browser

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")
SEARCH = {"nhs_number": PATIENT_NHS, "birth_date": "1970-01-01", "reason": "MDT"}


def _order(kind: str, control: str, status: str, *, uid: str = "", facility: str = "RYJ") -> bytes:
    """A completed (or not) order for the patient from a RIS: ORM^O01 with ZDS, or OMI^O23 with IPC."""
    segments = [
        f"MSH|^~\\&|CRIS|{facility}|IMEX|IMEX|20261125130000||{kind}|{control}|P|2.5.1",
        f"PID|1||R998877^^^{facility}^MR~{PATIENT_NHS}^^^NHS^NH||DOE^JANE||{PATIENT_DOB}|F",
        f"ORC|SC|ORD{control}|ACC{control}||{status}",
        f"OBR|1|ORD{control}|ACC{control}|XKNEL^MR KNEE LEFT|||20250302101500|||||||||||||||||MR",
    ]
    if kind.startswith("OMI"):
        segments.append(f"IPC|ACC{control}|RP1|{uid}|SPS1|MR")
    elif uid:
        segments.append(f"ZDS|{uid}^^Application^DICOM")
    return ("\r".join(segments) + "\r").encode()


def test_hub_and_hl7_feeds(make_config, start_hub, tmp_path: Path) -> None:
    hub = start_hub(make_config(locator__index_interval=0.2, locator__sweep_scan_interval=3600.0))
    register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "STORESCU", peers.free_port())
    register_pacs(hub, "RYJ", "Imperial College Healthcare", "RYJ_PACS", "RYJPACS", peers.free_port(), destination=True)
    register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", peers.free_port())
    add_user(hub, "gp.cambridge", "RGT", ["viewer"])
    add_user(hub, "admin.kings", "RJZ", ["institution_admin"])
    add_user(hub, "root", "RGT", ["system_admin"])
    kings = bearer(hub, "admin.kings")
    for ods_user, ods in (("admin.kings", "RJZ"),):
        assert (
            bearer(hub, ods_user)
            .put("/api/v1/locator/discoverability", json={"mode": "everyone"})
            .json()["institution"]
            == ods
        )

    # (a) a study sent through the hub to RYJ
    files = make_study(
        tmp_path / "s",
        series=2,
        instances_per_series=2,
        patient_id=PATIENT_NHS,
        birth_date=PATIENT_DOB,
        accession="K1",
        modality="CT",
        description="CT HEAD",
        extra={"BodyPartExamined": "HEAD"},
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 4
    wait_until(lambda: any(e.source == "hub" and e.num_instances == 4 for e in entries(hub)), timeout=30)
    [hubbed] = entries(hub)
    assert hubbed.num_series == 2 and hubbed.body_part == "HEAD" and hubbed.nhs_number == PATIENT_NHS
    gp = bearer(hub, "gp.cambridge")
    found = gp.post("/api/v1/locator/search", json=SEARCH).json()["items"]
    assert [(i["institution"]["ods_code"], i["source"], i["num_instances"]) for i in found] == [("RJZ", "hub", 4)]

    # (c) HL7 from Imperial's RIS
    add_ris(hub.db, "IMPERIAL_RIS", "RYJ", facilities=["RYJ"])
    port = hub.reports.port
    answer = send("127.0.0.1", port, _order("ORM^O01", "C1", "CM", uid="1.2.826.0.1.3680043.10.1.1"))
    assert answer.code == "AA", answer.text
    answer = send("127.0.0.1", port, _order("OMI^O23^OMI_O23", "C2", "CM", uid="1.2.826.0.1.3680043.10.1.2"))
    assert answer.code == "AA", answer.text
    assert send("127.0.0.1", port, _order("ORM^O01", "C3", "IP", uid="1.2.826.0.1.3680043.10.1.3")).code == "AA"
    assert send("127.0.0.1", port, _order("ORM^O01", "C4", "CM")).code == "AA"  # no UID: by accession
    unknown = send("127.0.0.1", port, _order("ORM^O01", "C5", "CM", facility="RXX"))
    assert unknown.code == "AE" and "not a registered RIS" in unknown.text
    assert send("127.0.0.1", port, b"MSH|^~\\&|X|RYJ|IMEX|IMEX|2026||ORM^O01|C6|P|2.5.1\rPID|garbage").code == "AE"
    report = (
        (DATA / "oru_v251_corrected.hl7")
        .read_bytes()
        .replace(b"|RJZ|IMEX", b"|RYJ|IMEX")
        .replace(b"19650412", PATIENT_DOB.encode())
    )
    assert send("127.0.0.1", port, report).code == "AA"
    by_key = {e.study_uid: e for e in entries(hub) if e.source == "hl7"}
    assert set(by_key) == {"1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2", "acc:ACCC4", "acc:RJZACC1001"}
    omi = by_key["1.2.826.0.1.3680043.10.1.2"]
    assert omi.modalities == "MR" and omi.study_date == "20250302" and omi.description == "MR KNEE LEFT"
    found = gp.post("/api/v1/locator/search", json=SEARCH).json()["items"]
    assert {i["source"] for i in found} == {"hub"}  # RYJ is not discoverable yet
    hidden = by_key["1.2.826.0.1.3680043.10.1.1"].id
    gp_pages = browser(hub, "gp.cambridge")
    assert gp_pages.get(f"/locator/view/{hidden}").status_code == 404
    assert gp.post(f"/api/v1/locator/entries/{hidden}/view").status_code == 404
    assert gp.post(f"/api/v1/locator/entries/{hidden}/source").status_code == 404
    with hub.db.sessions() as s:
        from sqlalchemy import func, select

        from imex.db.models import AuditEvent

        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.username == "gp.cambridge",
                    AuditEvent.outcome == "denied",
                    AuditEvent.object_id == str(hidden),
                )
            )
            == 3
        )
    with hub.db.session() as s:
        from imex.locator import policy

        policy.set_policy(
            s, s.scalar(policy.select(policy.Institution.id).where(policy.Institution.ods_code == "RYJ")), "everyone"
        )
    found = gp.post("/api/v1/locator/search", json=SEARCH).json()["items"]
    hl7_items = [i for i in found if i["source"] == "hl7"]
    assert len(hl7_items) == 4
    by_accession = {i["accession"]: i for i in hl7_items}
    assert by_accession["ACCC4"]["viewable"] is False  # known by accession only: request it, not view it
    refused = gp.post(f"/api/v1/locator/entries/{by_accession['ACCC4']['id']}/view")
    assert refused.status_code == 409 and "request it instead" in refused.json()["detail"]

    # admin side, and what it refuses
    assert kings.get("/api/v1/locator/discoverability").json()["mode"] == "everyone"
    assert kings.get("/api/v1/locator/discoverability", params={"institution": "RYJ"}).status_code == 404
    assert (
        kings.put("/api/v1/locator/discoverability", json={"mode": "restricted", "partners": ["NOPE"]}).status_code
        == 422
    )
    assert kings.put("/api/v1/locator/discoverability", json={"mode": "sometimes"}).status_code == 422
    assert (
        kings.put("/api/v1/locator/discoverability", json={"mode": "restricted", "partners": ["RJZ"]}).status_code
        == 422
    )
    assert gp.put("/api/v1/locator/discoverability", json={"mode": "none"}).status_code == 403
    assert kings.put("/api/v1/locator/networks/Stroke", json={"members": ["RJZ"]}).status_code == 403
    root = bearer(hub, "root")
    assert root.put("/api/v1/locator/networks/North%20stroke", json={"members": ["RJZ", "RGT"]}).json()["members"] == [
        "RGT",
        "RJZ",
    ]
    assert root.put("/api/v1/locator/networks/x", json={"members": ["ZZZ"]}).status_code == 422
    changed = kings.put("/api/v1/locator/discoverability", json={"mode": "restricted", "networks": ["North stroke"]})
    assert changed.status_code == 200 and changed.json()["networks"] == ["North stroke"]
    forged = httpx.put(
        f"{base_url(hub)}/api/v1/locator/discoverability",
        json={"mode": "everyone"},
        cookies=browser(hub, "admin.kings").cookies,
    )
    assert forged.status_code == 403
    assert kings.get("/api/v1/locator/discoverability").json()["mode"] == "restricted"
    with hub.db.sessions() as s:
        from sqlalchemy import select

        from imex.db.models import Node

        ryj_node = s.scalar(select(Node.id).where(Node.name == "RYJ_PACS"))
        rjz_node = s.scalar(select(Node.id).where(Node.name == "RJZ_PACS"))
    assert kings.put(f"/api/v1/locator/sweeps/{ryj_node}", json={"enabled": True}).status_code == 404
    assert kings.put(f"/api/v1/locator/sweeps/{rjz_node}", json={"queries_per_minute": 0}).status_code == 422
    swept = kings.put(f"/api/v1/locator/sweeps/{rjz_node}", json={"interval_minutes": 120, "lookback_days": 90})
    assert swept.status_code == 200 and swept.json()["interval_minutes"] == 120
    add_node(hub.db, "RJZ_CT", "RJZCT", "127.0.0.1", peers.free_port(), "RJZ", destination=False)
    with hub.db.sessions() as s:
        ct = s.scalar(select(Node.id).where(Node.name == "RJZ_CT"))
    assert "query/retrieve" in kings.put(f"/api/v1/locator/sweeps/{ct}", json={}).json()["detail"]
    assert [w["node"] for w in kings.get("/api/v1/locator/sweeps").json()] == ["RJZ_PACS"]
    page = browser(hub, "admin.kings").get("/admin/locator")
    assert page.status_code == 200 and "North stroke" in page.text and "RJZ_PACS" in page.text


DATA = Path(__file__).parents[2] / "data" / "hl7"
