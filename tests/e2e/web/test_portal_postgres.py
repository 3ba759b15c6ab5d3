"""The portal on PostgreSQL: sign-in, scoped worklists after a real delivery, and the database refusing
to change the audit trail (its trigger, not the application, enforces append-only)."""

from __future__ import annotations

import pytest

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.samples import make_study
from portaltools import add_user, assert_audit_is_append_only, bearer, browser

pytestmark = pytest.mark.postgres


def test_portal_on_postgresql(make_config, start_hub, storescp, postgres_url, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(database__url=postgres_url))
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "imperial_viewer", "RYJ", ["viewer"])
    add_user(hub, "kings_auditor", "RJZ", ["auditor"])
    files = make_study(tmp_path / "ct", instances_per_series=2, patient_name="POSTGRES^PAT", modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")

    viewer = browser(hub, "imperial_viewer")
    assert "POSTGRES, Pat" in viewer.get("/worklist").text
    assert viewer.get("/api/v1/notifications").json()["unread"] == 1
    trail = bearer(hub, "kings_auditor").get("/api/v1/audit", params={"action": "auth."}).json()
    assert trail["total"] >= 1  # the auditor's own token sign-in; the viewer's login is Imperial's business
    assert "imperial_viewer" not in {e["username"] for e in trail["items"]}

    assert_audit_is_append_only(hub)
