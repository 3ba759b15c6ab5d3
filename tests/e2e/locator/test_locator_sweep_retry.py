"""A PACS that hangs: its sweep times out, waits longer after each failure, keeps the progress it made, and
succeeds once the PACS answers again; and the same sweep and discoverability from the command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from sqlalchemy import select, update

from hubtools import write_toml
from imex.cli import main
from imex.db.models import LocatorSweep
from imex.directory import add_node
from imex.locator.sweep import backoff, configure, run_node
from imex.samples import make_study
from locatortools import PATIENT_DOB, PATIENT_NHS, GatedPacs, SilentPacs, entries, register_pacs


def _row(hub, node_id: int) -> LocatorSweep:  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return s.scalar(select(LocatorSweep).where(LocatorSweep.node_id == node_id))


def test_hanging_pacs_backs_off_then_recovers(make_config, start_hub, tmp_path: Path) -> None:
    hub = start_hub(
        make_config(
            locator__sweep_timeout_seconds=2.0,
            locator__sweep_retry_initial_seconds=60.0,
            locator__sweep_retry_max_seconds=150.0,
            locator__sweep_scan_interval=3600.0,
        )
    )
    silent = SilentPacs()
    files = make_study(
        tmp_path / "s",
        series=1,
        instances_per_series=2,
        patient_id=PATIENT_NHS,
        birth_date=PATIENT_DOB,
        accession="A1",
        modality="US",
    )
    answering = GatedPacs(files, "RJZPACS", hub.config["dicom.ae_title"], hub.config["dicom.port"])
    try:
        node = register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "RJZPACS", silent.port)
        configure(hub.db, "RJZ_PACS", lookback_days=10)
        delays = []
        for attempt in (1, 2, 3):
            before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            run = run_node(hub.db, hub.config, node)
            assert run.error and run.queries == 0
            row = _row(hub, node)
            assert row.attempts == attempt and row.swept_to == "" and row.last_ok_at is None
            delays.append((row.next_run_at - before).total_seconds())
        assert [round(d / 10) * 10 for d in delays] == [60, 120, 150]  # doubling, capped
        assert backoff(hub.config, 4) == 150.0
        assert entries(hub) == []
        # the PACS answers again (moved to a working port): the next run indexes and clears the failure
        add_node(hub.db, "RJZ_PACS", "RJZPACS", "127.0.0.1", answering.port, "RJZ", update=True)
        run = run_node(hub.db, hub.config, node)
        assert run.error is None
        row = _row(hub, node)
        assert row.attempts == 0 and row.last_error is None and row.swept_to and row.last_ok_at is not None
        assert [e.study_uid for e in entries(hub)] == [str(dcmread(files[0]).StudyInstanceUID)]
    finally:
        silent.close()
        answering.close()


def test_locator_cli(make_config, start_hub, tmp_path: Path) -> None:
    config = make_config(locator__sweep_scan_interval=3600.0)
    hub = start_hub(config)
    files = make_study(
        tmp_path / "s",
        series=1,
        instances_per_series=1,
        patient_id=PATIENT_NHS,
        birth_date=PATIENT_DOB,
        accession="C1",
        modality="DX",
    )
    pacs = GatedPacs(files, "RJZPACS", hub.config["dicom.ae_title"], hub.config["dicom.port"])
    toml = write_toml(tmp_path / "imex.toml", config)
    runner = CliRunner()

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, ["--config", str(toml), *args])

    try:
        node = register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "RJZPACS", pacs.port)
        register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", 1)
        add_node(hub.db, "RJZ_CT", "RJZCT", "127.0.0.1", 2, "RJZ", destination=False)
        done = cli("locator", "sweep", "RJZ_PACS", "--interval", "30", "--lookback", "20", "--rate", "100", "--now")
        assert done.exit_code == 0, done.output
        assert "every 30 min" in done.output and "1 indexed" in done.output
        refused = cli("locator", "sweep", "RJZ_CT")
        assert refused.exit_code != 0 and "query/retrieve" in refused.output
        assert cli("locator", "sweep", "NOPE").exit_code != 0
        assert cli("locator", "sweep", "RJZ_PACS", "--rate", "0").exit_code != 0
        made = cli("locator", "network", "North stroke", "--member", "RJZ", "--member", "RGT")
        assert made.exit_code == 0 and "RGT, RJZ" in made.output
        shown = cli(
            "locator", "discover", "RJZ", "--mode", "restricted", "--network", "North stroke", "--partner", "RGT"
        )
        assert shown.exit_code == 0 and "restricted; partners RGT; networks North stroke" in shown.output
        assert cli("locator", "discover", "RJZ", "--mode", "restricted", "--partner", "RJZ").exit_code != 0
        assert cli("locator", "discover", "ZZZ", "--mode", "none").exit_code != 0
        status = cli("locator", "status")
        assert "RJZ      sweep  1 studies" in status.output and "sweep RJZ_PACS: on" in status.output
        with hub.db.engine.begin() as conn:
            conn.execute(update(LocatorSweep.__table__).where(LocatorSweep.node_id == node).values(enabled=False))
        assert "sweep RJZ_PACS: off" in cli("locator", "status").output
    finally:
        pacs.close()


pytestmark = pytest.mark.timeout(300)
