"""The portal in a real browser (Debian's chromium driven by Playwright): sign in, the dashboard, a
worklist that updates by itself when a study arrives, a transfer's page with its actions, adding a user
from the admin page, and the audit trail; screenshots land next to the test's files."""
from __future__ import annotations

import shutil

import peers
import pytest
from playwright.sync_api import expect
from hubtools import register_hospitals, transfer_states, wait_until
from portaltools import PASSWORD, add_user, base_url, user_row

from imex.samples import make_study

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.console_errors = errors  # type: ignore[attr-defined]
        yield page
        browser.close()


def sign_in(page, hub, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(base_url(hub) + "/")
    assert page.url.endswith("/login?next=%2F")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url(hub) + "/")


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
    files = make_study(tmp_path / "ct", instances_per_series=3, patient_name="BROWSER^BETTY", patient_id="B1",
                       modality="CT", description="CT CHEST")
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
    hostile = make_study(tmp_path / "evil", instances_per_series=1, patient_name="<i>EVIL</i>^<b>X</b>",
                         patient_id="E1", modality="CT", description="<script>alert(2)</script>")
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
    page.click("text=Users")
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
