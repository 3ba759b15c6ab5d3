"""Harmonisation on the real path: dcmtk storescu pushes a study with a local Patient ID, the hub sends a
coerced copy to dcmtk storescp, and the stored original stays as received."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import events as transfer_events
from imex.db.models import instances, reconciliations, transfers
from imex.routing.reconcile import pending_reconciliations, reconcile
from imex.samples import make_study

NHS_NUMBER = "9434765919"
RULE = {
    "name": "Imperial files by NHS number",
    "destination": ["RYJ"],
    "nhs_number": "require",
    "accession_prefix": "{source_ods}-",
    "institution_name": "{source_name}",
}


def _nhs_item(number: str) -> Dataset:
    item = Dataset()
    item.PatientID = number
    item.IssuerOfPatientID = "NHS"
    item.TypeOfPatientID = "TEXT"
    return item


def _stored(hub) -> list[Dataset]:  # type: ignore[no-untyped-def]
    with hub.db.engine.connect() as conn:
        keys = conn.execute(select(instances.c.blob_key)).scalars().all()
    return [dcmread(hub.store.path(k)) for k in keys]


def _by_uid(paths) -> dict[str, Dataset]:  # type: ignore[no-untyped-def]
    return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in paths)}


def test_patient_id_becomes_nhs_number_with_originals_recorded(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config()
    config.harmonise = [RULE]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(
        tmp_path / "s",
        series=2,
        instances_per_series=3,
        patient_id="K123456",
        accession="A77",
        extra={"OtherPatientIDsSequence": Sequence([_nhs_item("943 476 5919")]), "IssuerOfPatientID": "RJZ"},
    )
    sent = _by_uid(files)

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 6

    received = _by_uid(dest.wait_for(6))
    wait_until(lambda: transfer_states(hub) == [("delivered", 6, 6)], message="delivery")
    assert received.keys() == sent.keys()
    for uid, ds in received.items():
        assert ds.PatientID == NHS_NUMBER and ds.IssuerOfPatientID == "NHS"
        assert ds.AccessionNumber == "RJZ-A77"
        assert ds.InstitutionName == "King's College Hospital"
        kept = [(i.PatientID, i.IssuerOfPatientID) for i in ds.OtherPatientIDsSequence]
        assert ("K123456", "RJZ") in kept
        [record] = ds.OriginalAttributesSequence
        assert record.ReasonForTheAttributeModification == "COERCE"
        [old] = record.ModifiedAttributesSequence
        assert old.PatientID == "K123456" and old.IssuerOfPatientID == "RJZ" and old.AccessionNumber == "A77"
        assert ds.PixelData == sent[uid].PixelData  # pixels untouched
        assert ds.StudyInstanceUID == sent[uid].StudyInstanceUID
    for ds in _stored(hub):  # the stored original is as received
        assert ds.PatientID == "K123456" and ds.AccessionNumber == "A77"
        assert "OriginalAttributesSequence" not in ds
        assert ds.PixelData == sent[str(ds.SOPInstanceUID)].PixelData


def test_invalid_nhs_number_is_held_until_reconciled(make_config, start_hub, storescp, tmp_path):
    _held_then_reconciled(make_config(), start_hub, storescp, tmp_path)


@pytest.mark.postgres
def test_held_and_reconciled_on_postgres(make_config, start_hub, storescp, postgres_url, tmp_path):
    _held_then_reconciled(make_config(database__url=postgres_url), start_hub, storescp, tmp_path)


def _held_then_reconciled(config, start_hub, storescp, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dest = storescp("RYJPACS")
    config.harmonise = [RULE]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(
        tmp_path / "s",
        instances_per_series=3,
        patient_id="9434765918",  # bad check digit
        accession="A78",
        extra={"IssuerOfPatientID": "NHS"},
    )

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3

    wait_until(lambda: [s for s, _, _ in transfer_states(hub)] == ["held"], message="transfer held")
    assert dest.files() == []  # held before anything was sent
    with hub.db.engine.connect() as conn:
        [waiting] = pending_reconciliations(conn)
        assert "check digit" in waiting.reason and waiting.destination_ods == "RYJ"
        transfer_id = waiting.transfer_id
        assert pending_reconciliations(conn, institution_id=999) == []

    reconcile(hub.db, transfer_id, "943-476-5919", "RYJ0001", actor="pacs.guardian")
    hub.work_queued.set()

    received = dest.wait_for(3)
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery after reconciliation")
    for ds in (dcmread(p) for p in received):
        assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == (NHS_NUMBER, "NHS", "RYJ0001")
        assert ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].PatientID == "9434765918"
    with hub.db.engine.connect() as conn:
        events = (
            conn.execute(
                select(transfer_events.c.event)
                .where(transfer_events.c.transfer_id == transfer_id)
                .order_by(transfer_events.c.id)
            )
            .scalars()
            .all()
        )
        rec = conn.execute(select(reconciliations)).one()
        attempts = conn.execute(select(transfers.c.attempts)).scalar_one()
    assert "held" in events and "reconciled" in events and events[-1] == "delivered"
    assert (rec.state, rec.patient_id, rec.issuer, rec.actor) == ("resolved", NHS_NUMBER, "NHS", "pacs.guardian")
    assert attempts == 1  # holding is not a failed attempt


def test_no_rule_for_destination_sends_stored_bytes(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config()
    config.harmonise = [{**RULE, "destination": ["SOMEWHERE_ELSE"]}]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "s", instances_per_series=2, patient_id="LOCAL9")

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2

    received = dest.wait_for(2)
    stored = {str(ds.SOPInstanceUID): ds for ds in _stored(hub)}
    for ds in (dcmread(p) for p in received):
        assert ds.PatientID == "LOCAL9" and "OriginalAttributesSequence" not in ds
        assert ds.to_json_dict() == stored[str(ds.SOPInstanceUID)].to_json_dict()
