"""Image requests through the pages in headless chromium, against two Orthanc PACS: an Imperial doctor
fills the request form; King's PACS guardian is e-mailed, finds it under "needs action" on the dashboard,
opens it, runs the search of King's PACS already filled in from the request, confirms the study and sends
it; the hub C-FINDs and C-MOVEs it from King's Orthanc and delivers it to Imperial's; the request page
shows it fulfilled and the doctor was e-mailed."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

import peers
from hubtools import wait_until
from imex.samples import make_study
from portaltools import add_user, base_url, sign_in_page
from requesttools import NHS, OTHER_NHS, Smtp, hospitals, no_patient_identifiers, orthanc, request_state, smtp_config

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")


def test_request_accept_and_send_through_the_pages(make_config, start_hub, browser_page, tmp_path):
    page = browser_page
    smtp = Smtp()
    mail = smtp.__enter__()
    try:
        hub = start_hub(smtp_config(make_config, smtp.port))
        with (
            orthanc(tmp_path / "kings", "RJZPACS", hub) as kings,
            orthanc(tmp_path / "imperial", "RYJPACS", hub) as imperial,
        ):
            hospitals(hub, kings_pacs_port=kings.dicom_port, imperial_pacs_port=imperial.dicom_port)
            for path in make_study(
                tmp_path / "ct",
                instances_per_series=2,
                patient_id=NHS,
                patient_name="DOE^JANE",
                accession="KCH7",
                modality="CT",
                description="CT HEAD",
            ):
                kings.upload(path)
            for path in make_study(
                tmp_path / "mr",
                instances_per_series=1,
                patient_id=OTHER_NHS,
                patient_name="ROE^RICHARD",
                accession="KCH8",
                modality="MR",
            ):
                kings.upload(path)
            add_user(hub, "imp_doc", "RYJ", ["sender"], email="doc@imperial.test")
            add_user(hub, "kings_guard", "RJZ", ["pacs_guardian"], email="guard@kings.test")

            sign_in_page(page, hub, "imp_doc")
            page.click("nav >> text=Requests")
            page.click("#new-request")
            form = page.locator("#request-form")
            form.locator("select[name=source]").select_option("RJZ")
            form.locator("input[name=nhs_number]").fill("943 476 5919")
            form.locator("input[name=modality]").fill("CT")
            form.locator("select[name=urgency]").select_option("urgent")
            form.locator("input[name=recipient]").fill("Neurosurgery registrar")
            form.locator("textarea[name=reason]").fill("Head injury; need the previous CT for comparison")
            form.locator("button[type=submit]").click()
            page.wait_for_url(f"{base_url(hub)}/requests/1")  # the new request's page, not a filled form
            expect(page.locator("#request-facts")).to_contain_text("Neurosurgery registrar")
            page.goto(f"{base_url(hub)}/requests?direction=outgoing")
            expect(page.locator("#requests")).to_contain_text("King's College Hospital")
            expect(page.locator("#requests")).to_contain_text("open")
            page.context.clear_cookies()

            wait_until(lambda: mail.to("guard@kings.test"), timeout=30, message="King's is e-mailed")
            sign_in_page(page, hub, "kings_guard")
            expect(page.locator("#requests-needing-action")).to_contain_text("Imperial College Healthcare")
            page.click("#requests-needing-action >> text=Request 1")
            expect(page.locator("#request-facts")).to_contain_text("Head injury")
            expect(page.locator("#source-search input[name=patient_id]")).to_have_value(NHS)
            expect(page.locator("#source-search input[name=modality]")).to_have_value("CT")
            page.click("#source-search button[type=submit]")
            expect(page.locator("#matches")).to_contain_text("KCH7")
            expect(page.locator("#matches")).not_to_contain_text("KCH8")
            page.screenshot(path=str(tmp_path / "request.png"), full_page=True)
            page.click("#send")
            expect(page.locator("h1")).to_contain_text("accepted")
            expect(page.locator("#history")).to_contain_text("granted")

            wait_until(lambda: len(imperial.instances()) == 2, timeout=60, message="delivered to Imperial")
            wait_until(lambda: request_state(hub, 1) == "fulfilled", timeout=30, message="fulfilled")
            page.reload()
            expect(page.locator("h1")).to_contain_text("fulfilled")
            expect(page.locator("#history")).to_contain_text("delivered to Imperial College Healthcare")
            wait_until(
                lambda: any("fulfilled" in m.subject for m in mail.to("doc@imperial.test")),
                timeout=30,
                message="the doctor is e-mailed",
            )
            no_patient_identifiers(mail.to("doc@imperial.test") + mail.to("guard@kings.test"), NHS, "DOE", "JANE")
            assert [e for e in page.console_errors if "status of" not in e] == []  # type: ignore[attr-defined]
    finally:
        smtp.__exit__()
