"""A sweep survives kill -9: `imex serve` is killed in the middle of sweeping a PACS; after the restart the
sweep starts again from the study date it had committed, not from the beginning of its look-back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from hubtools import wait_until, write_toml
from imex.db import Database
from imex.db.models import LocatorSweep, utcnow
from imex.directory import add_institution, add_node
from imex.locator.sweep import configure
from imex.samples import make_study
from locatortools import PATIENT_DOB, PATIENT_NHS, GatedPacs, entries


def test_sweep_resumes_after_kill_9(make_config, hub_process, tmp_path: Path) -> None:
    config = make_config(
        locator__sweep_scan_interval=0.2, locator__sweep_window_days=10, locator__sweep_claim_seconds=2.0
    )
    files = make_study(
        tmp_path / "s",
        series=1,
        instances_per_series=1,
        patient_id=PATIENT_NHS,
        birth_date=PATIENT_DOB,
        accession="K1",
        modality="CT",
    )
    pacs = GatedPacs(files, "RJZPACS", config["dicom.ae_title"], config["dicom.port"])
    db = Database(config.database_url)
    try:
        db.migrate()
        add_institution(db, "RJZ", "King's College Hospital")
        add_node(db, "RJZ_PACS", "RJZPACS", "127.0.0.1", pacs.port, "RJZ", destination=False, query_retrieve=True)
        configure(db, "RJZ_PACS", lookback_days=60, queries_per_minute=30)  # 2 s between queries: 7 windows

        def row() -> LocatorSweep:
            with db.sessions() as s:
                return s.scalar(select(LocatorSweep))

        toml = write_toml(tmp_path / "imex.toml", config)
        hub = hub_process(toml, "first")
        wait_until(lambda: row().swept_to != "", timeout=60)
        hub.kill()
        reached = row().swept_to
        assert row().last_ok_at is None  # killed in the middle of the run
        asked_before = len(pacs.asked)
        hub_process(toml, "second")
        wait_until(lambda: row().last_ok_at is not None, timeout=120)
        resumed = pacs.asked[asked_before]
        first_day = dt.datetime.strptime(resumed.split("-")[0], "%Y%m%d").date()
        assert first_day >= dt.datetime.strptime(reached, "%Y%m%d").date() - dt.timedelta(days=1), (reached, resumed)
        assert pacs.asked[0].split("-")[0] < resumed.split("-")[0]  # the first run started further back
        assert row().attempts == 0 and row().swept_to == utcnow().strftime("%Y%m%d")
        assert [e.nhs_number for e in entries(db)] == [PATIENT_NHS]
    finally:
        pacs.close()
        db.dispose()
