"""Pre-authorised transfer through the pages, in headless chromium: King's sender opens the search of
their PACS pre-filled from the address, looks at a study's series, selects two studies and sends them to
Imperial with a message and a PDF; the exchange page follows them to delivered. Imperial's user finds the
exchange, reads the message and downloads the PDF (same bytes); both studies are in Imperial's Orthanc."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

import exchangetools as xt
import peers
from portaltools import base_url, sign_in_page

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")


def test_send_two_studies_through_the_pages(make_config, start_hub, browser_page, tmp_path: Path) -> None:
    page = browser_page
    hub = start_hub(make_config())
    with (
        peers.Orthanc(
            tmp_path / "a", aet="RJZPACS", modalities={"HUB": (xt.HUB_AET, "127.0.0.1", hub.config["dicom.port"])}
        ) as a,
        peers.Orthanc(tmp_path / "b", aet="RYJPACS") as b,
    ):
        node_a = xt.register(hub.db, a, b)
        hub.nodes.invalidate()
        xt.add_people(hub)
        made = xt.make_studies(tmp_path / "studies")
        for paths in made:
            for path in paths:
                a.upload(path)
        pdf = xt.pdf_bytes("Referral letter")
        letter = tmp_path / "referral.pdf"
        letter.write_bytes(pdf)

        sign_in_page(page, hub, "alice")
        page.click("nav >> text=Exchanges")
        page.click("text=Send from our PACS")
        expect(page.locator("h1")).to_have_text("Send from our PACS")
        # another page (an image request) opens the search pre-filled: it runs at once
        page.goto(f"{base_url(hub)}/exchanges/send?node={node_a}&patient_id={xt.PATIENT}")
        expect(page.locator("input[name=patient_id]")).to_have_value(xt.PATIENT)
        rows = page.locator("#pacs-results tbody tr[data-uid]")
        expect(rows).to_have_count(2)
        expect(page.locator("#pacs-results")).to_contain_text("ACC1")
        expect(page.locator("#pacs-results")).to_contain_text("DOE, Jane")  # the name as a person reads it
        expect(page.locator("#pacs-results")).not_to_contain_text("ROE")  # another patient's study
        rows.filter(has_text="ACC1").locator("button", has_text="Series").click()
        expect(page.locator("#pacs-results .series-row li")).to_have_count(2)
        for i in range(2):
            rows.nth(i).locator("input[name=study]").check()
        page.select_option("#pacs-send select[name=destination]", "RYJ")
        page.fill("#pacs-send input[name=recipient]", "Neurosurgery registrar")
        page.fill("#pacs-send textarea[name=message]", "Both studies, please review before the MDT.")
        page.set_input_files("#pacs-send input[type=file]", str(letter))
        page.click("#pacs-send button[type=submit]")
        page.wait_for_url(f"{base_url(hub)}/exchanges/*")
        expect(page.locator("#tx-state")).to_have_text("delivered", timeout=120_000)
        expect(page.locator("#tx-studies .study-state")).to_have_text(["delivered", "delivered"])
        expect(page.locator("#messages")).to_contain_text("Both studies, please review before the MDT.")
        expect(page.locator("#attachments")).to_contain_text("referral.pdf")
        tx_url = page.url
        page.screenshot(path=str(tmp_path / "exchange.png"), full_page=True)

        wanted = {**xt.pixels_by_sop(made[0]), **xt.pixels_by_sop(made[1])}
        assert xt.received_pixels(b) == wanted

        page.context.clear_cookies()
        sign_in_page(page, hub, "bob")
        page.click("nav >> text=Exchanges")
        expect(page.locator("#exchanges")).to_contain_text("delivered")
        page.locator("#exchanges a", has_text="Exchange").first.click()
        assert page.url == tx_url
        expect(page.locator("#messages")).to_contain_text("Both studies, please review before the MDT.")
        expect(page.locator("#tx-studies")).to_contain_text("DOE, Jane")  # as a person reads it
        viewer_link = page.locator("#tx-studies a.open-viewer").first
        assert viewer_link.get_attribute("href").endswith("/viewer")  # each study opens in the viewer
        with page.expect_download() as download:
            page.click("#attachments >> text=referral.pdf")
        assert Path(download.value.path()).read_bytes() == pdf
        # Imperial answers on the thread from the page
        page.fill("#message-form textarea[name=body]", "Received; booked for Thursday.")
        page.click("#message-form button[type=submit]")
        expect(page.locator("#messages")).to_contain_text("Received; booked for Thursday.")
        assert not page.console_errors, page.console_errors
