"""View before import, and source it: a clinician opens a study another hospital holds; the hub C-MOVEs it
into its short-lived cache and the viewer shows the first image while the rest are still arriving (the
source holds back after two images until the test lets it go on). "Source it" sends it to the clinician's
own PACS (an Orthanc) with the harmonised identity. The cache is the requester's alone, expires and is
deleted, and the hospital's own PACS keeps the study."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import func, select

import peers
from hubtools import wait_until
from imex.db.models import Instance, Study, Tombstone, utcnow
from imex.locator import cache, policy
from imex.locator.sweep import configure, run_node
from imex.samples import make_study
from locatortools import PATIENT_DOB, PATIENT_NHS, GatedPacs, entries, register_pacs
from portaltools import add_user, base_url, bearer, sign_in_page

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")
RULE = {
    "name": "Cambridge files by NHS number",
    "destination": ["RGT"],
    "nhs_number": "use",
    "accession_prefix": "{source_ods}-",
}


def _nhs_item(number: str) -> Dataset:
    item = Dataset()
    item.PatientID = number
    item.IssuerOfPatientID = "NHS"
    return item


def _held(hub, uid: str) -> int:  # type: ignore[no-untyped-def]
    with hub.db.reader() as conn:
        return conn.execute(
            select(func.count())
            .select_from(Instance)
            .join(Study, Study.id == Instance.study_id)
            .where(Study.study_uid == uid)
        ).scalar_one()


def _study(hub, uid: str) -> Study | None:  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return s.scalar(select(Study).where(Study.study_uid == uid))


def _everyone(hub, ods: str) -> None:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        inst = s.scalar(select(policy.Institution).where(policy.Institution.ods_code == ods))
        policy.set_policy(s, inst.id, "everyone")


def test_view_while_arriving_then_source_it_into_own_pacs(make_config, start_hub, browser_page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    config = make_config(locator__sweep_scan_interval=3600.0)
    config.harmonise = [RULE]
    hub = start_hub(config)
    files = make_study(
        tmp_path / "remote",
        series=2,
        instances_per_series=4,
        patient_id="K123456",
        patient_name="DOE^JANE",
        birth_date=PATIENT_DOB,
        accession="A77",
        modality="CT",
        description="CT HEAD",
        extra={
            "OtherPatientIDsSequence": Sequence([_nhs_item(PATIENT_NHS)]),
            "IssuerOfPatientID": "RJZ",
            "BodyPartExamined": "HEAD",
        },
    )
    uid = str(dcmread(files[0]).StudyInstanceUID)
    gated = GatedPacs(files, "RJZPACS", hub.config["dicom.ae_title"], hub.config["dicom.port"], first=2)
    with peers.Orthanc(tmp_path / "own", aet="RGTPACS") as own:
        try:
            rjz = register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "RJZPACS", gated.port)
            register_pacs(
                hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", own.dicom_port, destination=True
            )
            register_pacs(hub, "RXH", "Brighton and Sussex", "RXH_PACS", "RXHPACS", peers.free_port())
            _everyone(hub, "RJZ")
            configure(hub.db, "RJZ_PACS", lookback_days=30)
            run = run_node(hub.db, hub.config, rjz)
            assert run.error is None and run.indexed >= 1  # this PACS ignores dates: every window finds it
            [entry] = entries(hub)
            assert entry.nhs_number == PATIENT_NHS and entry.num_instances == 8 and entry.num_series == 2

            add_user(hub, "dr.cambridge", "RGT", ["sender"])
            page = browser_page
            sign_in_page(page, hub, "dr.cambridge")
            page.goto(base_url(hub) + "/locator")
            page.fill("input[name=nhs_number]", PATIENT_NHS)
            page.fill("input[name=birth_date]", "1970-01-01")
            page.select_option("select[name=reason]", "direct care")
            page.click("#locator-search button[type=submit]")
            row = page.locator(f"#locator-results tr[data-id='{entry.id}']")
            expect(row).to_contain_text("King's College Hospital")
            expect(row).to_contain_text("CT HEAD")
            row.get_by_role("button", name="View").click()
            page.wait_for_url(re.compile(rf".*/locator/view/{entry.id}$"))
            canvas = page.locator(".viewport canvas").first
            expect(canvas).to_have_attribute("data-loaded", re.compile(r".+/1/"), timeout=60000)
            # the page shows an image while the hub holds only what the source has sent so far
            assert 0 < _held(hub, uid) < len(files) and gated.sent == 2
            expect(page.locator("#viewer")).not_to_have_attribute("data-complete", "1")
            gated.gate.set()
            expect(page.locator("#viewer")).to_have_attribute("data-complete", "1", timeout=60000)
            assert _held(hub, uid) == len(files)
            wait_until(lambda: (_study(hub, uid) or Study()).route_state == "cached", timeout=30)
            # only "not found" while nothing had arrived yet; no script error
            assert [e for e in page.console_errors if "404" not in e] == []

            # another institution's users do not see the cached study, by any of its ids
            add_user(hub, "dr.brighton", "RXH", ["viewer"])
            brighton = bearer(hub, "dr.brighton")
            study_id = _study(hub, uid).id
            assert brighton.get(f"/studies/{study_id}/viewer").status_code == 404
            assert brighton.get(f"/dicomweb/studies/{uid}/series").status_code == 404
            assert bearer(hub, "dr.cambridge").get(f"/dicomweb/studies/{uid}/series").status_code == 200

            # source it: one click sends it to our own PACS with the identity harmonised for us
            page.click("button[data-locator-source]")
            expect(page.locator("#locator-source-result")).to_contain_text("exchange")
            wait_until(lambda: len(own.instances()) == len(files), timeout=60)
            for item in own.get("/instances?expand"):
                tags = own.get(f"/instances/{item['ID']}/simplified-tags")
                assert tags["PatientID"] == PATIENT_NHS and tags["IssuerOfPatientID"] == "NHS"
                assert tags["AccessionNumber"] == "RJZ-A77"

            # the cache expires and is deleted; the source keeps its copy
            wait_until(lambda: _transfers_done(hub), timeout=30)
            assert cache.run_once(hub.db, hub.store, 4, now=utcnow() + dt.timedelta(hours=1)) == 0
            assert cache.run_once(hub.db, hub.store, 4, now=utcnow() + dt.timedelta(hours=5)) == 1
            assert _study(hub, uid) is None
            with hub.db.sessions() as s:
                assert s.scalar(select(Tombstone).where(Tombstone.study_uid == uid)).reason.startswith("view cache")
            assert bearer(hub, "dr.cambridge").get(f"/dicomweb/studies/{uid}/series").status_code == 404
        finally:
            gated.close()


def _transfers_done(hub) -> bool:  # type: ignore[no-untyped-def]
    from imex.db.models import Transfer

    with hub.db.sessions() as s:
        states = s.scalars(select(Transfer.state)).all()
    return bool(states) and all(st in ("delivered", "confirmed") for st in states)


def test_viewed_study_cache_expires_and_the_remote_orthanc_keeps_it(make_config, start_hub, tmp_path: Path) -> None:
    hub = start_hub(make_config(locator__sweep_scan_interval=3600.0))
    hub_aet, hub_port = hub.config["dicom.ae_title"], hub.config["dicom.port"]
    files = make_study(
        tmp_path / "remote",
        series=1,
        instances_per_series=3,
        patient_id=PATIENT_NHS,
        patient_name="DOE^JANE",
        birth_date=PATIENT_DOB,
        accession="B1",
        modality="MR",
    )
    uid = str(dcmread(files[0]).StudyInstanceUID)
    with peers.Orthanc(tmp_path / "ryj", aet="RYJPACS", modalities={"HUB": (hub_aet, "127.0.0.1", hub_port)}) as pacs:
        for path in files:
            pacs.upload(path)
        ryj = register_pacs(hub, "RYJ", "Imperial College Healthcare", "RYJ_PACS", "RYJPACS", pacs.dicom_port)
        register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", peers.free_port())
        _everyone(hub, "RYJ")
        configure(hub.db, "RYJ_PACS", lookback_days=30)
        assert run_node(hub.db, hub.config, ryj).indexed == 1
        [entry] = entries(hub)
        add_user(hub, "dr.cambridge", "RGT", ["viewer"])
        add_user(hub, "dr.ryj", "RYJ", ["viewer"])
        client = bearer(hub, "dr.cambridge")
        opened = client.post(f"/api/v1/locator/entries/{entry.id}/view")
        assert opened.status_code == 200, opened.text
        assert opened.json()["viewer"] == f"/locator/view/{entry.id}"
        wait_until(lambda: (_study(hub, uid) or Study()).route_state == "cached" and _held(hub, uid) == 3, timeout=60)
        assert client.get(f"/locator/view/{entry.id}").status_code == 200
        # hostile: ids that do not exist or are not ours
        assert client.post("/api/v1/locator/entries/999999/view").status_code == 404
        assert client.post("/api/v1/locator/entries/0/view").status_code == 422
        # a viewer may look, not send: sourcing gives the pre-filled request form instead
        sourced = client.post(f"/api/v1/locator/entries/{entry.id}/source").json()
        assert sourced["request_form"].startswith("/requests/new?") and f"study_uid={uid}" in sourced["request_form"]
        assert cache.run_once(hub.db, hub.store, 2, now=utcnow() + dt.timedelta(hours=3)) == 1
        assert _study(hub, uid) is None and _held(hub, uid) == 0
        with hub.db.sessions() as s:
            from imex.db.models import Retrieval

            assert s.scalars(select(Retrieval.state).where(Retrieval.study_uid == uid)).all() == ["cancelled"]
        assert [s["MainDicomTags"]["StudyInstanceUID"] for s in pacs.get("/studies?expand")] == [uid]
        assert len(pacs.instances()) == 3
