"""Upload through the page in chromium: a King's sender picks a patient's CD folder (50 files, 3 of them not
DICOM), watches it upload, reviews 47 instances and 3 skipped files, sends it to Imperial, and the 47
instances arrive at Imperial's PACS (dcmtk storescp) byte for byte. A zip bomb picked on the page is
refused there with the reason."""

from __future__ import annotations

from playwright.sync_api import expect
from pydicom import dcmread
from sqlalchemy import func, select

from hubtools import register_hospitals, wait_until
from imex.db.models import AuditEvent
from imex.samples import make_study
from portaltools import add_user, base_url, sign_in_page
from uploadtools import dataset_bytes, held, zip_of


def test_folder_upload_review_and_send_through_the_page(make_config, start_hub, storescp, browser_page, tmp_path):
    page = browser_page
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "kings_rad", "RJZ", ["sender"])
    cd = tmp_path / "PATIENT_CD"
    files = make_study(
        cd / "DICOM",
        series=2,
        instances_per_series=23,
        patient_name="BROWSER^BEA",
        patient_id="B47",
        modality="CT",
        description="CT ABDOMEN",
    )
    files += make_study(
        cd / "DICOM2",
        instances_per_series=1,
        patient_name="BROWSER^BEA",
        patient_id="B47",
        modality="CR",
        description="CHEST XR",
    )
    assert len(files) == 47
    (cd / "README.TXT").write_text("Images of BROWSER^BEA. Open VIEWER/viewer.exe to look at them.\n")
    (cd / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER\\viewer.exe\n")
    (cd / "VIEWER").mkdir()
    (cd / "VIEWER" / "viewer.exe").write_bytes(b"MZ" + bytes(range(256)) * 40)

    sign_in_page(page, hub, "kings_rad")
    page.click("nav >> text=Upload")
    expect(page.locator("h1")).to_contain_text("Upload from the browser")
    page.set_input_files("#folder", str(cd))
    expect(page.locator("#progress-text")).to_contain_text("50 of 50 file(s) uploaded", timeout=60_000)
    expect(page.locator("#instances-count")).to_have_text("47", timeout=30_000)
    expect(page.locator("#skipped-count")).to_have_text("3")
    expect(page.locator("#studies-count")).to_have_text("2")
    studies = page.locator("#studies tbody")
    expect(studies).to_contain_text("BROWSER, Bea")
    expect(studies).to_contain_text("CT ABDOMEN")
    expect(studies).to_contain_text("CHEST XR")
    expect(page.locator("#skipped")).to_contain_text("PATIENT_CD/VIEWER/viewer.exe: not a DICOM file")
    assert page.locator("#progress").get_attribute("value") == "100"
    assert "/upload/" in page.url

    page.select_option("#destination", "RYJ")
    page.fill("#send-form input[name=recipient]", "Dr Gastro")
    page.fill("#send-form textarea[name=message]", "CD brought in by the patient")
    page.click("#send")
    expect(page.locator("#send-result")).to_contain_text("Sent: 47 instance(s) stored", timeout=60_000)
    expect(page.locator("#send-form")).to_be_hidden()
    expect(page.locator("#send-result a")).to_have_attribute("href", "/exchanges/1")
    page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)

    received = dest.wait_for(47, timeout=60)
    by_uid = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in received}
    assert by_uid == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in files}
    with hub.db.sessions() as s:
        sends = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "upload.send"))
    assert sends == 2  # one event per study, each with its destination

    # a zip bomb picked on the page: refused there, with the reason
    page.goto(base_url(hub) + "/upload")
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zip_of({"IM0001": b"\0" * (64 << 20)}))
    page.set_input_files("#files", str(bomb))
    expect(page.locator("#refusals")).to_contain_text("bomb.zip: ")
    expect(page.locator("#refusals")).to_contain_text("zip bomb")
    expect(page.locator("#message")).to_contain_text("1 file(s) were refused")
    expect(page.locator("#instances-count")).to_have_text("0")
    wait_until(lambda: held(hub)[0] == 47, message="only the sent instances held")
    assert [e for e in page.console_errors if "status of 422" not in e] == []  # only the refused zip
