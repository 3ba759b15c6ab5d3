"""Image requests end to end with real peers, through the API: two Orthanc instances are the PACS of
King's (asked) and Imperial (asking). Granted: the hub C-FINDs King's PACS with the request's data,
C-MOVEs the chosen study and delivers it to Imperial's PACS; the request becomes fulfilled and the
requester is e-mailed (aiosmtpd). Pushed: King's sends the study to the hub itself; it is matched to the
request by NHS number and delivered to Imperial without anyone typing a destination, with the request's
priority on the transfer."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

import peers
from hubtools import wait_until
from imex.db.models import Study, Transfer
from imex.routing.priority import URGENT
from imex.samples import make_study
from portaltools import add_user, bearer
from requesttools import NHS, OTHER_NHS, Smtp, hospitals, no_patient_identifiers, orthanc, request_state, smtp_config

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")
SECRETS = (NHS, "DOE", "JANE", "19700101")


def _transfers_for(hub, study_uid: str) -> list[Transfer]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return list(
            s.scalars(select(Transfer).join(Study, Study.id == Transfer.study_id).where(Study.study_uid == study_uid))
        )


def test_granted_request_is_retrieved_from_kings_pacs_and_delivered_to_imperial(make_config, start_hub, tmp_path):
    smtp = Smtp()
    mail = smtp.__enter__()
    try:
        hub = start_hub(smtp_config(make_config, smtp.port))
        with (
            orthanc(tmp_path / "kings", "RJZPACS", hub) as kings,
            orthanc(tmp_path / "imperial", "RYJPACS", hub) as imperial,
        ):
            hospitals(hub, kings_pacs_port=kings.dicom_port, imperial_pacs_port=imperial.dicom_port)
            wanted = make_study(
                tmp_path / "ct",
                series=1,
                instances_per_series=3,
                patient_id=NHS,
                patient_name="DOE^JANE",
                birth_date="19700101",
                accession="KCH1",
                modality="CT",
                extra={"StudyDate": "20240110"},
            )
            other = make_study(
                tmp_path / "mr",
                series=1,
                instances_per_series=2,
                patient_id=OTHER_NHS,
                patient_name="ROE^RICHARD",
                accession="KCH2",
                modality="MR",
            )
            for path in wanted + other:
                kings.upload(path)
            add_user(hub, "imp_doc", "RYJ", ["sender"], email="doc@imperial.test")
            add_user(hub, "kings_guard", "RJZ", ["pacs_guardian"], email="guard@kings.test")
            doc, guard = bearer(hub, "imp_doc"), bearer(hub, "kings_guard")

            made = doc.post(
                "/api/v1/requests",
                json={
                    "source": "RJZ",
                    "nhs_number": NHS,
                    "modality": "CT",
                    "reason": "Previous CT for comparison",
                    "urgency": "urgent",
                },
            )
            assert made.status_code == 201, made.text
            rid = made.json()["id"]
            wait_until(lambda: mail.to("guard@kings.test"), timeout=30, message="the source is e-mailed")
            assert f"request {rid}" in mail.to("guard@kings.test")[0].body

            found = guard.post(f"/api/v1/requests/{rid}/search-source")
            assert found.status_code == 200, found.text
            assert found.json()["query"]["patient_id"] == NHS  # pre-filled from the request
            matches = found.json()["items"]
            assert [m["accession"] for m in matches] == ["KCH1"]
            sent = guard.post(f"/api/v1/requests/{rid}/fulfil", json={"study_uids": [matches[0]["study_uid"]]})
            assert sent.status_code == 200, sent.text
            assert sent.json()["state"] == "accepted" and sent.json()["transaction_id"] == sent.json()["sent_as"]

            wait_until(lambda: len(imperial.instances()) == 3, timeout=60, message="delivered to Imperial's PACS")
            assert sorted(imperial.instance_sop_uids()) == sorted(str(dcmread(p).SOPInstanceUID) for p in wanted)
            wait_until(lambda: request_state(hub, rid) == "fulfilled", timeout=30, message="request fulfilled")
            transfers = _transfers_for(hub, matches[0]["study_uid"])
            assert [t.priority for t in transfers] == [URGENT]  # the transfer's priority comes from the request
            wait_until(
                lambda: any("fulfilled" in m.subject for m in mail.to("doc@imperial.test")),
                timeout=30,
                message="the requester is e-mailed",
            )
            detail = doc.get(f"/api/v1/requests/{rid}").json()
            assert [e["event"] for e in detail["history"]] == ["created", "accepted", "granted", "fulfilled"]
            no_patient_identifiers(mail.to("doc@imperial.test") + mail.to("guard@kings.test"), *SECRETS)
            assert len(imperial.instances()) == 3  # the MR of another patient was not sent
    finally:
        smtp.__exit__()


def test_pushed_study_is_matched_by_nhs_number_and_sent_to_the_requester(make_config, start_hub, storescp, tmp_path):
    hub = start_hub(make_config(requests__scan_interval=0.3))
    dest = storescp(aet="RYJPACS")
    hospitals(hub, kings_pacs_port=peers.free_port(), imperial_pacs_port=dest.port, kings_aet="STORESCU")
    add_user(hub, "imp_doc", "RYJ", ["sender"])
    doc = bearer(hub, "imp_doc")
    rid = doc.post(
        "/api/v1/requests",
        json={
            "source": "RJZ",
            "nhs_number": NHS,
            "reason": "Outside imaging",
            "urgency": "urgent",
            "recipient": "Fracture clinic",
        },
    ).json()["id"]
    unrelated = make_study(tmp_path / "other", instances_per_series=2, patient_id=OTHER_NHS, modality="CR")
    wanted = make_study(
        tmp_path / "ct",
        instances_per_series=3,
        patient_id=NHS,
        patient_name="DOE^JANE",
        modality="CT",
        accession="KCH9",
    )
    assert peers.storescu(unrelated, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0]
    assert peers.storescu(wanted, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0, 0]
    dest.wait_for(3, timeout=60)
    assert sorted(dest.sop_uids()) == sorted(str(dcmread(p).SOPInstanceUID) for p in wanted)
    wait_until(lambda: request_state(hub, rid) == "fulfilled", timeout=30, message="request fulfilled")
    uid = str(dcmread(wanted[0]).StudyInstanceUID)
    [transfer] = _transfers_for(hub, uid)
    assert transfer.priority == URGENT and transfer.recipient == "Fracture clinic"
    assert _transfers_for(hub, str(dcmread(unrelated[0]).StudyInstanceUID)) == []  # quarantined, not sent
    history = doc.get(f"/api/v1/requests/{rid}").json()["history"]
    assert [e["event"] for e in history] == ["created", "matched", "fulfilled"]
    assert "NHS number" in history[1]["detail"]

    # King's files the patient under its own ID; the NHS number is in Other Patient IDs (issuer NHS)
    second = doc.post(
        "/api/v1/requests", json={"source": "RJZ", "nhs_number": OTHER_NHS, "modality": "MR", "reason": "Knee MR"}
    ).json()["id"]
    other_ids = Dataset()
    other_ids.PatientID, other_ids.IssuerOfPatientID = OTHER_NHS, "NHS"
    local = make_study(
        tmp_path / "mr",
        instances_per_series=2,
        patient_id="K777",
        modality="MR",
        extra={"IssuerOfPatientID": "RJZ", "OtherPatientIDsSequence": Sequence([other_ids])},
    )
    assert peers.storescu(local, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0]
    dest.wait_for(5, timeout=60)
    wait_until(lambda: request_state(hub, second) == "fulfilled", timeout=30, message="second request fulfilled")
    assert "NHS number" in doc.get(f"/api/v1/requests/{second}").json()["history"][1]["detail"]
