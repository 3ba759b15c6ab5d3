#!/usr/bin/env python3
"""Cut-through benchmark: how soon after the hub receives the last instance of an emergency study does
that instance reach the destination, next to a routine study that waits to be stable.

A 300-instance 512x512 CT (imex.samples.make_study) is pushed with storescu to an in-process hub whose rule
sends it to a dcmtk storescp. For each priority it prints: the push (storescu start -> exit), the moment
delivery started relative to the end of the push, and the gap between the hub receiving the last instance
(studies.last_received_at) and the newest file at the destination (its modification time).

    PYTHONPATH=tests/helpers python bench/cut_through.py     # 300 instances of 512x512, stable_seconds 10
    PYTHONPATH=tests/helpers python bench/cut_through.py --rows 256 --stable 5

(tests/helpers holds peers.py and hubtools.py, the tests' dcmtk and hub helpers.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

import peers  # tests/helpers/peers.py: run with PYTHONPATH=tests/helpers
from hubtools import fast_config, register_hospitals
from imex.db.models import Study, Transfer
from imex.hub import Hub
from imex.samples import make_study


def run(level: str, work: Path, rows: int, count: int, stable: float) -> None:
    dest = peers.StoreSCP(work / f"dest-{level}", aet="RYJPACS").start()
    rule = {"name": level, "source_institution": ["RJZ"], "to": ["RYJ"], "priority": level}
    hub = Hub(fast_config(work / f"hub-{level}", rules=[rule], routing__stable_seconds=stable, store__fsync=True))
    hub.start()
    try:
        register_hospitals(hub, dest_port=dest.port)
        files = make_study(
            work / f"ct-{level}",
            series=1,
            instances_per_series=count,
            rows=rows,
            columns=rows,
            description=f"{level.upper()} CT",
        )
        started = time.time()
        result = peers.storescu(files, hub.listener.port, "IMEX")
        pushed = time.time()
        assert result.statuses == [0] * count, result.output[-2000:]
        dest.wait_for(count, timeout=600)
        newest = max(p.stat().st_mtime for p in dest.files())
        with hub.db.session() as s:
            study = s.scalar(select(Study))
            transfer = s.scalar(select(Transfer))
        epoch = dt.datetime(1970, 1, 1)
        last_in = (study.last_received_at - epoch).total_seconds()
        began = (transfer.started_at - epoch).total_seconds()
        print(
            f"{level:9s} push {pushed - started:6.2f} s | delivery began {began - pushed:+7.2f} s after the push "
            f"ended | last instance at destination {newest - last_in:6.3f} s after it reached the hub"
        )
    finally:
        hub.stop()
        dest.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--stable", type=float, default=10.0, help="routing.stable_seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imex-cut-") as tmp:
        for level in ("emergency", "routine"):
            run(level, Path(tmp), args.rows, args.count, args.stable)


if __name__ == "__main__":
    main()
