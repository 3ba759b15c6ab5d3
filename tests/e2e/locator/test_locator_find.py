"""Finding a patient's imaging across institutions: three Orthancs as the PACS of three hospitals are swept
by the hub; a clinician at a fourth hospital finds the patient's studies there (and nobody else's) with a
reason that is audited; discoverability decides who sees what; FHIR ImagingStudy search gives the same
answer; bad input is refused; a PACS that never answers fails its own sweep only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

import peers
from hubtools import wait_until
from imex.db.models import AuditEvent, LocatorSweep
from imex.locator import policy
from imex.locator.sweep import configure
from imex.samples import make_study
from locatortools import OTHER_NHS, PATIENT_DOB, PATIENT_NHS, SilentPacs, entries, register_pacs
from portaltools import add_user, base_url, bearer, browser

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")

HOSPITALS = [
    ("RJZ", "King's College Hospital", "CT", "HEAD", "CT HEAD"),
    ("RYJ", "Imperial College Healthcare", "MR", "KNEE", "MR KNEE LEFT"),
    ("RAL", "Royal Free London", "CR", "CHEST", "CHEST XRAY"),
]


def _fill(pacs: peers.Orthanc, tmp: Path, ods: str, modality: str, body: str, description: str) -> str:
    """The patient's study (2 series of 2 and 3 images) among other patients' studies; returns its UID."""
    ours = make_study(
        tmp / f"{ods}-ours-1",
        series=1,
        instances_per_series=2,
        patient_id=PATIENT_NHS,
        patient_name="DOE^JANE",
        birth_date=PATIENT_DOB,
        accession=f"{ods}1",
        modality=modality,
        description=description,
        extra={"BodyPartExamined": body, "StudyDate": "20250301"},
    )
    uid = str(dcmread(ours[0]).StudyInstanceUID)
    ours += make_study(
        tmp / f"{ods}-ours-2",
        series=1,
        instances_per_series=3,
        patient_id=PATIENT_NHS,
        patient_name="DOE^JANE",
        birth_date=PATIENT_DOB,
        accession=f"{ods}1",
        modality=modality,
        study_uid=uid,
        description=description,
        extra={"BodyPartExamined": body, "StudyDate": "20250301"},
    )
    others = make_study(
        tmp / f"{ods}-other",
        series=1,
        instances_per_series=1,
        patient_id=OTHER_NHS,
        patient_name="ROE^RICHARD",
        birth_date="19600505",
        accession=f"{ods}2",
        modality=modality,
    )
    local = make_study(
        tmp / f"{ods}-local",
        series=1,
        instances_per_series=1,
        patient_id=f"{ods}-K123",
        patient_name="POE^EDGAR",
        birth_date=PATIENT_DOB,
        accession=f"{ods}3",
        modality=modality,
    )
    # the same NHS number with another date of birth: a data error the locator must never show
    clash = make_study(
        tmp / f"{ods}-clash",
        series=1,
        instances_per_series=1,
        patient_id=PATIENT_NHS,
        patient_name="DOE^JOHN",
        birth_date="19800101",
        accession=f"{ods}4",
        modality=modality,
    )
    for path in ours + others + local + clash:
        pacs.upload(path)
    return uid


def test_sweeps_search_discoverability_and_fhir(make_config, start_hub, tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.imagingstudy import ImagingStudy
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    hub = start_hub(
        make_config(
            locator__sweep_scan_interval=0.2,
            locator__sweep_timeout_seconds=300.0,
            locator__sweep_window_days=400,
            locator__sweep_retry_initial_seconds=600.0,
        )
    )
    hub_aet, hub_port = hub.config["dicom.ae_title"], hub.config["dicom.port"]
    silent = SilentPacs()
    pacses = [
        peers.Orthanc(tmp_path / ods, aet=f"{ods}PACS", modalities={"HUB": (hub_aet, "127.0.0.1", hub_port)})
        for ods, *_ in HOSPITALS
    ]
    try:
        for pacs in pacses:
            pacs.start()
        ours = {}
        for pacs, (ods, name, modality, body, description) in zip(pacses, HOSPITALS, strict=False):
            ours[ods] = _fill(pacs, tmp_path, ods, modality, body, description)
            register_pacs(hub, ods, name, f"{ods}_PACS", f"{ods}PACS", pacs.dicom_port)
        register_pacs(hub, "RQM", "Chelsea and Westminster", "RQM_PACS", "RQMPACS", silent.port)
        register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", peers.free_port())
        register_pacs(hub, "RXH", "Brighton and Sussex", "RXH_PACS", "RXHPACS", peers.free_port())
        with hub.db.session() as s:
            policy.set_network(s, "East stroke network", ["RGT", "RAL"])
            for ods in ("RJZ", "RYJ", "RAL"):
                inst = s.scalar(select(policy.Institution).where(policy.Institution.ods_code == ods))
                mode, partners, networks = {
                    "RJZ": ("everyone", [], []),
                    "RYJ": ("restricted", ["RGT"], []),
                    "RAL": ("restricted", [], ["East stroke network"]),
                }[ods]
                policy.set_policy(s, inst.id, mode, partners=partners, networks=networks)
        # the silent PACS first: its sweep hangs until it times out, and the others do not wait for it
        for node in ("RQM_PACS", "RJZ_PACS", "RYJ_PACS", "RAL_PACS"):
            configure(hub.db, node, interval_minutes=60, lookback_days=800, queries_per_minute=600)

        def swept() -> bool:  # the three Orthancs, whatever the silent PACS is doing
            with hub.db.sessions() as s:
                return sum(1 for r in s.scalars(select(LocatorSweep)) if r.last_ok_at is not None) == 3

        wait_until(swept, timeout=60)
        found = entries(hub)
        assert {e.study_uid for e in found if e.birth_date == PATIENT_DOB} == set(ours.values())
        assert all(e.source == "sweep" for e in found)
        assert OTHER_NHS in {e.nhs_number for e in found}  # other patients are indexed too, never shown
        assert not any(e.patient_id.endswith("-K123") for e in found)  # no NHS number: not indexed

        # meanwhile the silent PACS's sweep is still waiting for an answer, in its own thread
        hanging = _sweep(hub, "RQM_PACS")
        assert hanging.last_run_at is None and hub.locator.sweeper.running[hanging.node_id].is_alive()
        silent.close()  # it hangs up: the sweep fails (a timeout does the same: test_locator_sweep_retry.py)
        wait_until(lambda: _sweep(hub, "RQM_PACS").last_error is not None, timeout=30)
        hung = _sweep(hub, "RQM_PACS")
        assert hung.attempts == 1 and hung.last_ok_at is None and hung.swept_to == ""
        assert "did not accept" in hung.last_error or "cannot reach" in hung.last_error
        assert hung.next_run_at > hung.last_run_at  # retried later, with backoff

        add_user(hub, "gp.cambridge", "RGT", ["viewer"])
        add_user(hub, "dr.brighton", "RXH", ["viewer"])
        add_user(hub, "clerk.cambridge", "RGT", ["auditor"])
        cambridge = bearer(hub, "gp.cambridge")
        asked = {"nhs_number": "943 476 5919", "birth_date": "1970-01-01", "reason": "direct care"}
        answer = cambridge.post("/api/v1/locator/search", json=asked)
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        assert {i["study_uid"] for i in items} == set(ours.values())  # partner and network member: all three
        by_ods = {i["institution"]["ods_code"]: i for i in items}
        assert by_ods["RJZ"]["num_instances"] == 5 and by_ods["RJZ"]["num_series"] == 2
        assert by_ods["RJZ"]["modalities"] == ["CT"] and by_ods["RJZ"]["body_part"] == ["HEAD"]
        assert sorted(s["instances"] for s in by_ods["RYJ"]["series"]) == [2, 3]
        assert by_ods["RAL"]["description"] == "CHEST XRAY" and by_ods["RAL"]["source"] == "sweep"
        assert by_ods["RAL"]["study_date"] == "20250301" and by_ods["RAL"]["age"]

        with hub.db.sessions() as s:
            logged = s.scalars(
                select(AuditEvent).where(AuditEvent.action == "locator.search", AuditEvent.username == "gp.cambridge")
            ).all()
        assert len(logged) == 1 and "reason: direct care" in logged[0].detail
        assert logged[0].patient_id == PATIENT_NHS and logged[0].outcome == "success"

        # Brighton is in no network and no one's partner: only RJZ (everyone) shows
        brighton = bearer(hub, "dr.brighton")
        answer = brighton.post("/api/v1/locator/search", json=asked).json()
        assert [i["institution"]["ods_code"] for i in answer["items"]] == ["RJZ"]
        # and it is told which institutions it could not search, so an empty result is not "no imaging"
        hidden = {i["ods"] for i in answer["not_searched"]}
        assert {"RYJ", "RAL"} <= hidden and "RJZ" not in hidden and "RXH" not in hidden
        # RJZ stops being discoverable: nobody else sees its studies any more
        with hub.db.session() as s:
            inst = s.scalar(select(policy.Institution).where(policy.Institution.ods_code == "RJZ"))
            policy.set_policy(s, inst.id, "none")
        assert brighton.post("/api/v1/locator/search", json=asked).json()["items"] == []
        assert {
            i["institution"]["ods_code"] for i in cambridge.post("/api/v1/locator/search", json=asked).json()["items"]
        } == {"RYJ", "RAL"}

        # hostile and wrong input
        for wrong, why in (
            ({**asked, "nhs_number": "9434765918"}, "modulus 11"),
            ({**asked, "nhs_number": "94347659"}, "digits"),
            ({**asked, "reason": ""}, "reason for the search is required"),
            ({**asked, "reason": "curiosity"}, "not an accepted reason"),
            ({**asked, "birth_date": "1970-02-30"}, "not a date"),
        ):
            refused = cambridge.post("/api/v1/locator/search", json=wrong)
            assert refused.status_code == 422 and why in refused.json()["detail"], refused.text
        assert (
            cambridge.post("/api/v1/locator/search", json={k: v for k, v in asked.items() if k != "reason"}).status_code
            == 422
        )
        # a date of birth that matches nothing: nothing; each record shows only with its own date of birth
        assert (
            cambridge.post("/api/v1/locator/search", json={**asked, "birth_date": "1975-05-05"}).json()["items"] == []
        )
        clashing = cambridge.post("/api/v1/locator/search", json={**asked, "birth_date": "1980-01-01"}).json()["items"]
        assert clashing and all(i["accession"].endswith("4") for i in clashing)
        assert bearer(hub, "clerk.cambridge").post("/api/v1/locator/search", json=asked).status_code == 403
        forged = httpx.post(
            f"{base_url(hub)}/api/v1/locator/search", json=asked, cookies=browser(hub, "gp.cambridge").cookies
        )
        assert forged.status_code in (401, 403)  # a browser session without its CSRF token
        with hub.db.sessions() as s:
            failures = s.scalars(
                select(AuditEvent).where(AuditEvent.action == "locator.search", AuditEvent.outcome == "failure")
            ).all()
        assert len(failures) >= 5

        # FHIR: the same answer as a searchset Bundle of ImagingStudy
        fhir = cambridge.get(
            "/fhir/ImagingStudy",
            params={
                "patient.identifier": f"https://fhir.nhs.uk/Id/nhs-number|{PATIENT_NHS}",
                "patient.birthdate": "1970-01-01",
            },
            headers={"X-Access-Reason": "MDT"},
        )
        assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
        bundle = Bundle.model_validate(fhir.json())
        assert bundle.type == "searchset" and bundle.total == 2
        studies = [ImagingStudy.model_validate(e.resource.model_dump()) for e in bundle.entry]
        for study in studies:
            assert study.subject.identifier.value == PATIENT_NHS
            assert study.numberOfSeries == 2 and study.numberOfInstances == 5
            assert sorted(s.numberOfInstances for s in study.series) == [2, 3]
            assert {s.uid for s in study.series} and study.status == "available"
            holder = study.identifier[0].assigner
            assert holder.type == "Organization" and holder.identifier.value in ("RYJ", "RAL")
        knee = next(s for s in studies if s.description == "MR KNEE LEFT")
        assert knee.modality[0].code == "MR" and knee.started.isoformat().startswith("2025-03-01")
        assert f"urn:oid:{ours['RYJ']}" in {i.value for i in knee.identifier}

        def problem(response: httpx.Response, status: int) -> str:
            assert response.status_code == status, response.text
            assert response.headers["content-type"].startswith("application/fhir+json")
            return OperationOutcome.model_validate(response.json()).issue[0].diagnostics

        ident = f"https://fhir.nhs.uk/Id/nhs-number|{PATIENT_NHS}"
        assert "reason" in problem(
            cambridge.get(
                "/fhir/ImagingStudy", params={"patient.identifier": ident, "patient.birthdate": "1970-01-01"}
            ),
            400,
        )
        assert "date of birth" in problem(
            cambridge.get("/fhir/ImagingStudy", params={"patient.identifier": ident, "reason": "MDT"}), 400
        )
        assert "modulus 11" in problem(
            cambridge.get(
                "/fhir/ImagingStudy",
                params={
                    "patient.identifier": "https://fhir.nhs.uk/Id/nhs-number|9434765918",
                    "patient.birthdate": "1970-01-01",
                    "reason": "MDT",
                },
            ),
            400,
        )
        assert "nhs-number" in problem(
            cambridge.get(
                "/fhir/ImagingStudy",
                params={
                    "patient.identifier": f"urn:oid:1.2.3|{PATIENT_NHS}",
                    "patient.birthdate": "1970-01-01",
                    "reason": "MDT",
                },
            ),
            400,
        )
        assert "not supported" in problem(
            cambridge.get(
                "/fhir/ImagingStudy",
                params={
                    "patient.identifier": ident,
                    "patient.birthdate": "1970-01-01",
                    "reason": "MDT",
                    "_include": "x",
                },
            ),
            400,
        )
        assert problem(httpx.get(f"{base_url(hub)}/fhir/ImagingStudy", params={"patient.identifier": ident}), 401)
        mismatch = cambridge.get(
            "/fhir/ImagingStudy",
            params={"patient.identifier": ident, "patient.birthdate": "1975-05-05", "reason": "MDT"},
        )
        assert Bundle.model_validate(mismatch.json()).total == 0

        # an institution that leaves the network (its PACS disabled) leaves the index
        from imex.directory import remove_node

        remove_node(hub.db, "RAL_PACS")
        from imex.locator import hub_index

        hub_index.run_once(hub.db)
        assert {
            i["institution"]["ods_code"] for i in cambridge.post("/api/v1/locator/search", json=asked).json()["items"]
        } == {"RYJ"}
    finally:
        silent.close()
        for pacs in pacses:
            pacs.stop()


def _sweep(hub, node_name: str) -> LocatorSweep:  # type: ignore[no-untyped-def]
    from imex.db.models import Node

    with hub.db.sessions() as s:
        return s.scalar(select(LocatorSweep).join(Node, Node.id == LocatorSweep.node_id).where(Node.name == node_name))
