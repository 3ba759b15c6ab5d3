"""Retrievals and the router hook with real peers: a PACS that does not know the hub fails the exchange
with a clear error on its page; a study fetched for viewing is kept as "cached" and never routed; and a
`kill -9` of the hub in the middle of a C-MOVE loses nothing: after the restart the study still arrives
at the destination."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

import exchangetools as xt
import peers
from hubtools import wait_until, write_toml
from imex.db import Database
from imex.db.models import Retrieval, Study, Transfer, transactions
from imex.exchanges import retrievals
from imex.exchanges.transactions import open_transaction, overall_state, study_progress
from imex.samples import make_study
from portaltools import browser

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")


def test_a_pacs_that_does_not_know_the_hub_and_a_view_retrieval(make_config, start_hub, tmp_path: Path) -> None:
    hub = start_hub(make_config(exchange__retrieve_max_attempts=2, exchange__retrieve_retry_seconds=0.2))
    with peers.Orthanc(tmp_path / "a", aet="RJZPACS") as a, peers.Orthanc(tmp_path / "b", aet="RYJPACS") as b:
        node_a = xt.register(hub.db, a, b)  # A's Orthanc has no modality for the hub: it cannot move to it
        hub.nodes.invalidate()
        xt.add_people(hub)
        made = xt.make_studies(tmp_path / "studies")
        for path in made[0]:
            a.upload(path)
        alice = browser(hub, "alice")
        sent = alice.post(
            f"/api/v1/pacs/{node_a}/send",
            json={"study_uids": [xt.study_uid(made[0])], "destination": "RYJ", "message": "CT head"},
        )
        assert sent.status_code == 201, sent.text
        tid = sent.json()["id"]
        failed = xt.wait_state(alice, tid, "failed", timeout=60)
        assert "does not know the hub" in failed["studies"][0]["detail"]
        page = alice.get(f"/exchanges/{tid}")
        assert page.status_code == 200
        assert "does not know the hub" in page.text and "state-failed" in page.text
        with hub.db.engine.connect() as conn:
            row = conn.execute(select(Retrieval.state, Retrieval.attempts)).one()
            assert tuple(row) == ("failed", 2)
            from imex.db.models import Notification

            assert conn.execute(
                select(Notification.title).where(
                    Notification.link == f"/exchanges/{tid}", Notification.kind == "exchange.failed"
                )
            ).scalars().all() == [f"A study of exchange {tid} could not be retrieved from your PACS"]
        assert b.instances() == []

        # the PACS is told about the hub; a retry fetches the study and the exchange completes
        a.add_modality("HUB", xt.HUB_AET, "127.0.0.1", hub.config["dicom.port"])
        assert "Ask our PACS again" in page.text
        assert browser(hub, "rita").post(f"/api/v1/transactions/{tid}/retry").status_code == 403  # not the sender
        assert alice.post(f"/api/v1/transactions/{tid}/retry").json() == {"retried": 1}
        xt.wait_state(alice, tid, "delivered", timeout=90)
        assert set(xt.received_pixels(b)) == xt.sop_uids(made[0])

        # a study fetched for viewing only: it arrives, is kept "cached", and goes nowhere
        for path in made[2]:
            a.upload(path)
        view_uid = xt.study_uid(made[2])
        with hub.db.engine.begin() as conn:
            retrievals.enqueue(conn, node_id=node_a, study_uid=view_uid, purpose="view", requested_by="alice")

        def cached() -> bool:
            with hub.db.engine.connect() as conn:
                return conn.execute(select(Study.route_state).where(Study.study_uid == view_uid)).scalar() == "cached"

        wait_until(cached, timeout=60, message="the viewed study cached")
        with hub.db.engine.connect() as conn:
            assert (
                conn.execute(
                    select(func.count()).select_from(Transfer).join(Study).where(Study.study_uid == view_uid)
                ).scalar_one()
                == 0
            )
        assert view_uid not in {xt.study_uid([p]) for p in []}  # nothing more went to Imperial:
        assert set(xt.received_pixels(b)) == xt.sop_uids(made[0])

        # a node the hub may not query cannot be asked
        with hub.db.engine.begin() as conn, pytest.raises(retrievals.RetrievalError, match="may not query"):
            from imex.db.models import Node

            node_b = conn.execute(select(Node.id).where(Node.name == "RYJ_PACS")).scalar_one()
            retrievals.enqueue(conn, node_id=node_b, study_uid=view_uid)


def test_kill_9_during_a_retrieval(make_config, hub_process, tmp_path: Path) -> None:
    config = make_config(exchange__retrieve_lease_seconds=2.0, delivery__lease_seconds=2.0)
    with (
        peers.Orthanc(
            tmp_path / "a", aet="RJZPACS", modalities={"HUB": (xt.HUB_AET, "127.0.0.1", config["dicom.port"])}
        ) as a,
        peers.Orthanc(tmp_path / "b", aet="RYJPACS") as b,
    ):
        toml = write_toml(
            tmp_path / "imex.toml",
            config,
            institutions=[
                {"ods": "RJZ", "name": "King's College Hospital"},
                {"ods": "RYJ", "name": "Imperial College Healthcare"},
            ],
            nodes=[
                {
                    "name": "RJZ_PACS",
                    "ae_title": "RJZPACS",
                    "host": "127.0.0.1",
                    "port": a.dicom_port,
                    "institution": "RJZ",
                    "destination": False,
                    "query_retrieve": True,
                },
                {
                    "name": "RYJ_PACS",
                    "ae_title": "RYJPACS",
                    "host": "127.0.0.1",
                    "port": b.dicom_port,
                    "institution": "RYJ",
                },
            ],
        )
        files = make_study(
            tmp_path / "big",
            series=4,
            instances_per_series=60,
            rows=256,
            columns=256,
            patient_id=xt.PATIENT,
            accession="BIG1",
        )
        for path in files:
            a.upload(path)
        uid = xt.study_uid(files)
        proc = hub_process(toml)
        db = Database(config.database_url)
        with db.engine.begin() as conn:
            from imex.db.models import Institution, Node

            rjz = conn.execute(select(Institution.id).where(Institution.ods_code == "RJZ")).scalar_one()
            ryj = conn.execute(select(Institution.id).where(Institution.ods_code == "RYJ")).scalar_one()
            node_a = conn.execute(select(Node.id).where(Node.name == "RJZ_PACS")).scalar_one()
            tid = open_transaction(
                conn,
                kind="preauthorised",
                source_institution_id=rjz,
                destination_institution_id=ryj,
                sender_user_id=None,
                sender_name="test",
                study_uids=[uid],
            )
            retrievals.enqueue(conn, node_id=node_a, study_uid=uid, transaction_id=tid, institution_id=rjz)

        def midway() -> bool:
            with db.engine.connect() as conn:
                moving = conn.execute(select(Retrieval.state)).scalar() == "moving"
                arrived = conn.execute(select(Study.num_instances).where(Study.study_uid == uid)).scalar() or 0
            return moving and 0 < arrived < len(files)

        wait_until(midway, timeout=60, interval=0.02, message="the C-MOVE under way")
        proc.kill()
        with db.engine.connect() as conn:
            assert conn.execute(select(Retrieval.state)).scalar() == "moving"  # killed in the middle
        hub_process(toml, name="hub-restarted")

        def delivered() -> bool:
            with db.engine.connect() as conn:
                tx = conn.execute(select(transactions).where(transactions.c.id == tid)).one()
                return overall_state(study_progress(conn, tx)) == "delivered"

        wait_until(delivered, timeout=180, interval=0.5, message="the exchange delivered after the restart")
        assert set(xt.received_pixels(b)) == xt.sop_uids(files)
        with db.engine.connect() as conn:
            state, attempts = conn.execute(select(Retrieval.state, Retrieval.attempts)).one()
        assert state == "done" and attempts >= 2
        db.dispose()
