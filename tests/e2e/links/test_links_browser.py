"""An outside recipient in headless chromium: a King's admin makes a link from the study page; the
recipient opens it, asks for a code, reads it from the e-mail a real SMTP server (aiosmtpd) received,
enters it, sees the study drawn in the viewer and downloads the zip, whose DICOMDIR lists every instance
with the stored bytes. Then the link is revoked and the same browser sees a page saying so."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import zipfile
from typing import Any

import pytest
from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import Instance
from linktools import setup_hub, study
from portaltools import base_url, sign_in_page

controller_module = pytest.importorskip("aiosmtpd.controller")


class Inbox:
    """aiosmtpd handler keeping (recipients, subject, body) of every message."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        with self.lock:
            self.mails.append((list(envelope.rcpt_tos), str(msg["Subject"]), body.get_content() if body else ""))
        return "250 OK"

    def codes(self, address: str) -> list[str]:
        with self.lock:
            return [
                m.group(1)
                for to, _, body in self.mails
                if address in to
                for m in [re.search(r"one-time code is (\d{6})", body)]
                if m
            ]


@pytest.fixture
def inbox():  # type: ignore[no-untyped-def]
    box = Inbox()
    controller = controller_module.Controller(box, hostname="127.0.0.1", port=peers.free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    yield box
    controller.stop()


def test_recipient_opens_views_and_downloads(make_config, start_hub, storescp, inbox, browser_page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    dest = storescp("RYJPACS")
    hub = start_hub(
        make_config(smtp__host="127.0.0.1", smtp__port=inbox.port, smtp__timeout=5.0, smtp__retry_initial_seconds=0.5)
    )
    register_hospitals(hub, dest_port=dest.port)
    setup_hub(hub, tmp_path)
    page = browser_page
    target = study(hub)

    # the creator: the form on the study page answers with the link's address
    sign_in_page(page, hub, "kings_admin")
    page.goto(f"{base_url(hub)}/studies/{target.id}")
    form = page.locator("#link-form")
    form.locator("input[name=email]").fill("patient@outside.example")
    form.locator("select[name=mode]").select_option("download")
    form.locator("button[type=submit]").click()
    result = form.locator("[data-result]")
    expect(result).to_contain_text("/l/")
    url = re.search(r"(http\S+/l/[\w-]+)", result.text_content()).group(1)  # type: ignore[union-attr]
    page.reload()
    expect(page.locator("#links tbody tr").first).to_contain_text("patient@outside.example")
    expect(page.locator("#links tbody tr").first).to_contain_text("active")

    # the recipient, in a browser of their own
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    tab = other.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(url)
    expect(tab.locator("#link-open")).to_contain_text("p***@outside.example")
    tab.click("#send-form button")
    expect(tab.locator("#code-sent")).to_be_visible()
    wait_until(lambda: inbox.codes("patient@outside.example"), timeout=30, message="the code's e-mail")
    with inbox.lock:
        for _to, subject, body in [m for m in inbox.mails if "patient@outside.example" in m[0]]:
            assert "LILY" not in body and "L1" not in body.split() and "ACCLINK1" not in body and "LILY" not in subject
    tab.fill("input[name=code]", inbox.codes("patient@outside.example")[-1])
    tab.click("#code-form button")
    tab.wait_for_url(f"{base_url(hub)}/link/study")
    expect(tab.locator("#viewer")).to_have_attribute("data-ready", "1", timeout=30_000)
    canvas = tab.locator(".viewport canvas").first
    expect(canvas).to_have_attribute("data-loaded", re.compile(".+"), timeout=30_000)
    drawn = tab.evaluate("""() => { const c = document.querySelector('.viewport canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0 || d[i + 1] > 0 || d[i + 2] > 0) lit++;
        return lit; }""")
    assert drawn > 100
    expect(tab.locator(".thumb")).to_have_count(2)
    tab.screenshot(path=str(tmp_path / "link-viewer.png"))

    with tab.expect_download() as info:
        tab.click("#link-download")
    saved = tmp_path / "download.zip"
    info.value.save_as(saved)
    zipfile.ZipFile(saved).extractall(tmp_path / "zip")
    from pydicom.fileset import FileSet

    with hub.db.sessions() as s:
        stored = {
            i.sop_uid: hub.store.read(i.blob_key)
            for i in s.scalars(select(Instance).where(Instance.study_id == target.id))
        }
    fs = FileSet(tmp_path / "zip" / "DICOMDIR")
    assert {i.SOPInstanceUID for i in fs} == set(stored)
    for inst in fs:
        assert (tmp_path / "zip" / inst.FileID).read_bytes() == stored[inst.SOPInstanceUID]

    # revoked from the study page: the recipient's next step shows the page that says so
    page.once("dialog", lambda d: d.accept())
    page.click("#links button[data-api$='/revoke']")
    expect(page.locator("#links tbody tr").first).to_contain_text("revoked")
    tab.reload()
    expect(tab.locator("#link-gone")).to_be_visible()
    tab.goto(url)
    expect(tab.locator("#link-gone")).to_contain_text("withdrawn")
    assert errors == []
    other.close()
