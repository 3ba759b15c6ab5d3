"""A destination that is down, as Imperial's PACS manager sees it in Chromium: the worklist shows the error
from the first failed attempt, the dashboard and the Destinations page say the node is failing, the
institution's contact is alerted once, and Retry now delivers as soon as the node is back."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import AuditEvent, Email, Notification
from imex.samples import make_study
from portaltools import add_user, base_url, browser, sign_in_page

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")


def test_a_down_destination_is_visible_at_once_alerts_once_and_retry_now_delivers(
    make_config, start_hub, storescp, browser_page, tmp_path
):
    port = peers.free_port()  # Imperial's PACS, not listening yet
    # the hub's own retries wait long: only Retry now can deliver within this test
    config = make_config(
        delivery__retry_initial_seconds=600.0,
        delivery__retry_max_seconds=600.0,
        alerts__destination_down_minutes=0.02,
    )
    hub = start_hub(config)
    register_hospitals(hub, dest_port=port)
    add_user(hub, "manager", "RYJ", ["pacs_guardian", "institution_admin"])
    files = make_study(tmp_path / "s", instances_per_series=3, patient_name="DOWN^DORA")
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 3
    wait_until(lambda: transfer_states(hub) and hub_attempts(hub) >= 1, message="a failed attempt")

    page = browser_page
    sign_in_page(page, hub, "manager")
    failing = page.locator("#failing-destinations")
    assert "IMPERIAL_PACS" in failing.inner_text()
    page.goto(base_url(hub) + "/worklist")
    row = page.locator("#worklist tbody tr").first
    text = row.inner_text()
    assert "retrying" in text and "attempt 1 failed" in text and "IMPERIAL_PACS" in text
    assert "refused" in text.lower() or "connect" in text.lower()

    page.goto(base_url(hub) + "/destinations")
    dest = page.locator("tr[data-node=IMPERIAL_PACS]")
    assert "failing" in dest.inner_text() and "1 retrying" in dest.inner_text()

    # C-ECHO of the node that is down: shown as a failure, in plain words, without stretching the page
    page.goto(base_url(hub) + "/admin/nodes")
    node_row = page.locator("#nodes tr[data-id]", has_text="IMPERIAL_PACS")
    node_row.get_by_role("button", name="Test (C-ECHO)").click()
    result = node_row.locator("[data-result]")
    result.filter(has_text="IMPERIAL_PACS").wait_for()
    assert (
        "error" in (result.get_attribute("class") or "") and "ok" not in (result.get_attribute("class") or "").split()
    )
    assert not result.inner_text().startswith("message")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400

    # the institution's contact is told once, however long the outage lasts
    wait_until(lambda: emails_about(hub, "IMPERIAL_PACS"), message="the down alert")
    with hub.db.session() as s:
        assert [e.recipient for e in s.scalars(select(Email).where(Email.subject.like("%IMPERIAL_PACS%")))] == [
            "pacs@imperial.test"
        ]
        assert s.scalar(select(Notification).where(Notification.kind == "destination.down")) is not None
    hub.stop_event.wait(0.5)
    assert len(emails_about(hub, "IMPERIAL_PACS")) == 1

    # in bulk, from the API: nothing waits after a failure but this transfer
    bulk = browser(hub, "manager").post("/api/v1/transfers/retry-failed", json={"include_waiting": True})
    assert bulk.status_code == 200 and len(bulk.json()["retried"]) == 1
    wait_until(lambda: hub_attempts(hub) >= 2, message="the bulk retry's attempt")

    pacs = storescp("RYJPACS", port=port)
    assert pacs.running
    page.goto(base_url(hub) + "/destinations")
    dest.get_by_role("button", name="Retry now").click()
    received = pacs.wait_for(3)
    assert len(received) == 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivered")
    page.goto(base_url(hub) + "/destinations")
    assert "ok" in page.locator("tr[data-node=IMPERIAL_PACS]").inner_text()
    with hub.db.session() as s:
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "destination.retry")).username == "manager"


def hub_attempts(hub) -> int:  # type: ignore[no-untyped-def]
    from imex.db.models import Transfer

    with hub.db.session() as s:
        return max((t.attempts for t in s.scalars(select(Transfer))), default=0)


def emails_about(hub, node: str) -> list[str]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return [e.subject for e in s.scalars(select(Email).where(Email.subject.like(f"%{node}%")))]
