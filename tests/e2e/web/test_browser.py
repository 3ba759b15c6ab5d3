"""The portal in a real browser (Debian's chromium driven by Playwright): sign in, the dashboard, a
worklist that updates by itself when a study arrives, a transfer's page with its actions, adding a user
from the admin page, and the audit trail; screenshots land next to the test's files."""

from __future__ import annotations

from playwright.sync_api import expect

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.samples import make_study
from portaltools import PASSWORD, add_user, base_url, sign_in_page, user_row


def sign_in(page, hub, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(base_url(hub) + "/")
    assert page.url.endswith("/login?next=%2F")
    sign_in_page(page, hub, username)


def test_worklist_updates_live_and_actions_work(make_config, start_hub, storescp, browser_page, tmp_path):
    page = browser_page
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(http__worklist_refresh_seconds=1))
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "imperial_rad", "RYJ", ["viewer", "pacs_guardian"])
    sign_in(page, hub, "imperial_rad")
    assert page.locator("h1").inner_text() == "Dashboard"
    assert "No studies have arrived" in page.content()

    page.click("text=Worklist")
    page.wait_for_selector("#worklist")
    assert page.locator("#worklist tbody tr.empty").count() == 1
    # a study arrives while the page is open: it appears without a reload
    files = make_study(
        tmp_path / "ct",
        instances_per_series=3,
        patient_name="BROWSER^BETTY",
        patient_id="B1",
        modality="CT",
        description="CT CHEST",
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery")
    row = page.locator("#worklist tbody tr[data-id]")
    row.first.wait_for(timeout=15000)
    expect(page.locator("#worklist tbody .state").first).to_have_text("delivered", timeout=15000)
    cells = row.first.locator("td").all_inner_texts()
    assert cells[0] == "delivered" and "BROWSER, Betty" in cells[1] and cells[3] == "CT" and cells[5] == "3"
    assert page.locator("#total").inner_text() == "1"
    page.screenshot(path=str(tmp_path / "worklist.png"), full_page=True)

    # a hostile patient name arrives: shown as text by the live update and by the server page, never run
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    hostile = make_study(
        tmp_path / "evil",
        instances_per_series=1,
        patient_name="<i>EVIL</i>^<b>X</b>",
        patient_id="E1",
        modality="CT",
        description="<script>alert(2)</script>",
    )
    assert peers.storescu(hostile, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    expect(page.locator("#total")).to_have_text("2", timeout=20000)
    expect(page.locator("#worklist tbody")).to_contain_text("<script>alert(2)</script>")
    assert page.locator("#worklist tbody i, #worklist tbody b, #worklist tbody script").count() == 0
    page.reload()
    expect(page.locator("#worklist tbody")).to_contain_text("<I>EVIL</I>, <B>X</B>")
    assert page.locator("#worklist tbody i, #worklist tbody b, #worklist tbody script").count() == 0
    assert dialogs == []

    # filters: a search that matches nothing, then sorting links keep the filter
    page.fill("input[name=q]", "nobody-by-this-name")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#worklist tbody tr.empty")
    page.fill("input[name=q]", "BROWSER")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#worklist tbody tr[data-id]")

    row = page.locator("#worklist tbody tr[data-id]").first
    row.locator("a").click()
    page.wait_for_selector("h1:has-text('Transfer')")
    assert "3 of 3 images sent" in page.content()
    assert page.locator("text=delivered").count() >= 1
    page.click("text=CT CHEST")  # the study page
    page.wait_for_selector("h2:has-text('Series')")
    assert "No report has arrived" in page.content()
    page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_admin_adds_a_user_and_reads_the_audit_trail(make_config, start_hub, browser_page, tmp_path):
    page = browser_page
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=9)
    add_user(hub, "kings_admin", "RJZ", ["institution_admin", "auditor"])
    sign_in(page, hub, "kings_admin")
    page.click("nav summary:has-text('Manage')")  # administration is grouped in one menu
    page.click("nav >> text=Users")
    page.wait_for_selector("#users")
    form = page.locator("form[data-api='/api/v1/users']")
    form.locator("input[name=username]").fill("newbie")
    form.locator("input[name=full_name]").fill("New Starter")
    form.locator("input[name=password]").fill("short")
    form.locator("input[value=sender]").check()
    form.locator("button[type=submit]").click()
    error = form.locator("[data-result]")
    error.wait_for(state="visible")
    expect(error).to_contain_text("at least")  # the policy, in words, in the page
    form.locator("input[name=password]").fill("a long enough passphrase")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#users tr[data-username=newbie]")
    assert "sender" in page.locator("#users tr[data-username=newbie]").inner_text()
    newbie = user_row(hub, "newbie")
    assert newbie.full_name == "New Starter" and newbie.must_change_password

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#users tr[data-username=newbie] button:has-text('Disable')").click()
    expect(page.locator("#users tr[data-username=newbie]")).to_contain_text("disabled")
    assert user_row(hub, "newbie").disabled

    page.click("text=Audit")
    page.wait_for_selector("#audit tbody tr")
    page.fill("#audit-filter input[name=action]", "user.")
    page.click("#audit-filter button[type=submit]")
    expect(page.locator("#audit-count")).to_have_text("2 event(s)")
    text = page.locator("#audit tbody").inner_text()
    assert "user.add" in text and "user.disable" in text and "newbie" in text
    assert "format=csv&action=user." in page.locator("#export-csv").get_attribute("href")
    page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)
    # the one failed request is the refused password (the browser logs every 4xx)
    assert [e for e in page.console_errors if "status of 422" not in e] == []  # type: ignore[attr-defined]


def test_totp_sign_in_retry_a_failed_transfer_and_every_main_page(make_config, start_hub, browser_page, tmp_path):
    import pyotp

    page = browser_page
    dest = peers.StoreSCP(tmp_path / "ryj-pacs", aet="RYJPACS")  # not started yet: the destination is down
    hub = start_hub(make_config(delivery__max_attempts=1))
    register_hospitals(hub, dest_port=dest.port)
    secret = pyotp.random_base32()
    add_user(hub, "kings_admin", "RJZ", ["institution_admin", "auditor"], totp_secret=secret)
    files = make_study(
        tmp_path / "ct", instances_per_series=2, patient_name="RETRY^ROSE", modality="CT", description="CT HEAD"
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0]
    wait_until(lambda: transfer_states(hub) == [("failed", 0, 2)], message="failed for good")

    page.goto(base_url(hub) + "/")
    page.fill("input[name=username]", "kings_admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/login/second-factor")
    page.fill("input[name=code]", "000000")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not right")
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.click("button[type=submit]")
    page.wait_for_url(base_url(hub) + "/")
    expect(page.locator("section.alert")).to_contain_text("RETRY, Rose")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    page.locator("section.alert a:has-text('RETRY, Rose')").click()
    page.wait_for_selector("h1:has-text('Transfer')")
    expect(page.locator("dd.error")).to_contain_text("RYJPACS")
    dest.start()
    with page.expect_navigation():  # the page reloads itself once the API accepted the retry
        page.click("button:has-text('Retry now')")
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery after retry")
    page.reload()
    expect(page.locator("h1 .state")).to_have_text("delivered")
    assert "2 of 2 images sent" in page.content()
    page.screenshot(path=str(tmp_path / "transfer.png"), full_page=True)
    dest.stop()

    for path, heading in (
        ("/worklist?direction=outgoing", "Worklist"),
        ("/admin/nodes", "DICOM nodes"),
        ("/admin/users", "Users"),
        ("/admin/roles", "Roles"),
        ("/admin/quarantine", "Quarantine"),
        ("/admin/rules", "Routing rules"),
        ("/admin/worklists", "Worklists"),
        ("/audit", "Audit trail"),
        ("/account", "My account"),
        ("/notifications", "Notifications"),
    ):
        page.goto(base_url(hub) + path)
        expect(page.locator("h1")).to_have_text(heading)
        page.screenshot(path=str(tmp_path / f"{path.strip('/').split('?')[0].replace('/', '-')}.png"), full_page=True)
    audit = page.locator("#audit tbody")
    page.goto(base_url(hub) + "/audit")
    expect(audit).to_contain_text("transfer.retry")
    expect(audit).to_contain_text("auth.totp_failed")
    # the one failed request is the wrong code, answered 401 with the form again
    assert [e for e in page.console_errors if "status of 401" not in e] == []  # type: ignore[attr-defined]
