"""Sharing and importing in the browser (chromium): a King's sender shares a study in an elective folder
from its page; an Imperial PACS guardian finds it under Folders, compares it with the patient their
Orthanc holds (C-FIND), and imports it under the local ID."""

from __future__ import annotations

from playwright.sync_api import expect
from pydicom import dcmread
from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import Study
from imex.folders.manage import add_folder, set_member
from imex.samples import make_study
from portaltools import add_user, base_url, sign_in_page, user_row


def test_share_then_import_through_the_pages(make_config, start_hub, browser_page, tmp_path):
    page = browser_page
    hub = start_hub(make_config())
    with peers.Orthanc(
        tmp_path / "orthanc", aet="RYJPACS", modalities={"imex": ("IMEX", "127.0.0.1", hub.listener.port)}
    ) as orthanc:
        register_hospitals(hub, dest_port=orthanc.dicom_port)
        folder_id = add_folder(hub.db, "Stroke network", "elective", institutions_ods=["RJZ", "RYJ"], owner_ods="RJZ")
        add_user(hub, "kings_rad", "RJZ", ["sender"])
        add_user(hub, "guardian", "RYJ", ["pacs_guardian", "sender"])
        members = [user_row(hub, name).id for name in ("kings_rad", "guardian")]
        with hub.db.engine.begin() as conn:
            for user_id in members:
                set_member(conn, folder_id, user_id, True)
        local = make_study(
            tmp_path / "local",
            instances_per_series=1,
            patient_name="STROKE^SUE",
            patient_id="RYJ42",
            birth_date="19500101",
        )
        assert peers.storescu(local, orthanc.dicom_port, "RYJPACS", "LOCAL").statuses == [0]
        files = make_study(
            tmp_path / "ct",
            instances_per_series=2,
            patient_name="STROKE^SUE",
            patient_id="K42",
            accession="KCH42",
            modality="CT",
            description="CT HEAD",
        )
        assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0]  # quarantined
        uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        wait_until(
            lambda: _study(hub, uid) is not None and _study(hub, uid).route_state == "quarantined", message="arrived"
        )

        sign_in_page(page, hub, "kings_rad")
        page.goto(f"{base_url(hub)}/studies/{_study(hub, uid).id}")
        page.select_option("#share select[name=folder]", str(folder_id))
        page.click("#share button[type=submit]")
        expect(page.locator("#share [data-result]")).to_contain_text("Done")
        page.screenshot(path=str(tmp_path / "share.png"), full_page=True)
        page.context.clear_cookies()

        sign_in_page(page, hub, "guardian")
        page.click("nav >> text=Folders")
        page.click("text=Stroke network")
        expect(page.locator("#folder-studies")).to_contain_text("STROKE, Sue")
        page.click("#folder-studies >> text=Import…")
        expect(page.locator("h1")).to_contain_text("Import into IMPERIAL_PACS")
        page.fill("input[name=search]", "RYJ42")
        page.click("#local-search button[type=submit]")
        expect(page.locator("#local-patients")).to_contain_text("RYJ42")
        expect(page.locator("input[name=patient_id]")).to_have_value("RYJ42")
        page.fill("input[name=accession_number]", "RYJA42")
        page.screenshot(path=str(tmp_path / "import.png"), full_page=True)
        page.click('form[data-api$="/import"] button[type=submit]')
        expect(page.locator("[data-result]").last).to_contain_text("transfer id")
        wait_until(lambda: len(orthanc.instances()) == 3, message="imported into Orthanc")
        assert {p["MainDicomTags"]["PatientID"] for p in orthanc.get("/patients?expand")} == {"RYJ42"}
        assert [e for e in page.console_errors if "status of" not in e] == []  # type: ignore[attr-defined]


def _study(hub, uid: str):  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return s.scalar(select(Study).where(Study.study_uid == uid))
