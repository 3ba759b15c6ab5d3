"""Storage accounting and quotas: over its institution's quota an instance gets DICOM status A700 and
nothing of it is stored; the contact is alerted; admins see what each institution and folder holds."""

from __future__ import annotations

from sqlalchemy import func, select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import Email, Instance, Institution
from imex.folders.manage import add_folder
from imex.samples import make_study
from portaltools import add_user, bearer, browser


def test_quota_refuses_with_a700_and_stores_nothing_of_the_refused(make_config, start_hub, tmp_path):
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=peers.free_port())
    add_folder(hub.db, "Emergency", "emergency", alias="EMERGENCY", institutions_ods=["RJZ", "RYJ"])
    hub.nodes.invalidate()
    add_user(hub, "operator", "RJZ", ["system_admin"])
    files = make_study(tmp_path / "ct", instances_per_series=3, modality="CT")
    one = files[0].stat().st_size
    admin = browser(hub, "operator")
    with hub.db.sessions() as s:
        kings = s.scalar(select(Institution.id).where(Institution.ods_code == "RJZ"))
    answer = admin.patch(f"/api/v1/institutions/{kings}", json={"quota_bytes": int(one * 1.5)})
    assert answer.status_code == 200 and answer.json()["quota_bytes"] == int(one * 1.5)
    result = peers.storescu(files, hub.listener.port, "EMERGENCY", "STORESCU")
    assert result.statuses[0] == 0 and result.statuses[1:] == [0xA700, 0xA700]
    with hub.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1
        mails = s.scalars(select(Email)).all()
    assert len([p for p in hub.store.root.glob("???/*") if p.is_file()]) == 1  # nothing partial
    assert len(tmp_files := list(hub.store.tmp.glob("*"))) == 0, tmp_files
    assert [m.recipient for m in mails] == ["pacs@kings.test"] and "quota" in mails[0].subject  # once, not twice

    wait_until(lambda: admin.get("/api/v1/storage").json()["folders"][0]["studies"] == 1, message="filed")
    held = admin.get("/api/v1/storage").json()
    row = next(i for i in held["institutions"] if i["ods"] == "RJZ")
    assert row["studies"] == 1 and one * 0.9 < row["bytes"] < one * 1.1 and row["quota_bytes"] == int(one * 1.5)
    assert held["folders"] == [{"name": "Emergency", "kind": "emergency", "bytes": row["bytes"], "studies": 1}]
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    own = bearer(hub, "kings_admin")
    assert [i["ods"] for i in own.get("/api/v1/storage").json()["institutions"]] == ["RJZ"]
    assert own.patch(f"/api/v1/institutions/{kings}", json={"quota_bytes": 10**12}).status_code == 403
    assert own.patch(f"/api/v1/institutions/{kings}", json={"retention_hours": 48}).json()["retention_hours"] == 48

    # the quota lifted, the sender's retry succeeds
    admin.patch(f"/api/v1/institutions/{kings}", json={"quota_bytes": 0})
    assert peers.storescu(files, hub.listener.port, "EMERGENCY", "STORESCU").statuses == [0, 0, 0]
