#!/usr/bin/env python3
"""Viewer benchmark: time to first image and frames per second while scrolling a CT through the DICOMweb
rendered endpoint, imex against Orthanc's DICOMweb plugin (Debian's orthanc-dicomweb), same data, same run.

The study (300 x 512x512 16-bit CT by default, made by imex.samples) is pushed with dcmtk's storescu to a
fresh `imex serve` subprocess and to a fresh Orthanc with its DICOMweb plugin. Then, for each server, with
a keep-alive HTTP client as a viewer would use:

  first image    QIDO-RS list of the series' instances, then the first instance rendered (JPEG), cold
  scroll 1       every instance rendered in order, one request at a time (frames per second), cold
  scroll 6       the same with 6 requests in flight (what a browser's prefetch does), after scroll 1
  scroll again   scroll 1 repeated: what a user scrolling back sees (imex serves its render cache)

imex is asked with a bearer token, as a script or external viewer would be; Orthanc without
authentication. Every peer runs with TCP_NODELAY=1.

    PYTHONPATH=tests/helpers python bench/viewer.py                     # 300 instances, once
    PYTHONPATH=tests/helpers python bench/viewer.py --repeat 3 --data /tmp/ct300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import route  # bench/route.py, next to this script: the routing benchmark's data, storescu and `imex serve` helpers
from route import LOCALHOST, BenchError, Hub, Orthanc, peers, prepare_data, push, study_files

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "bench_viewer", "bench viewer correct horse battery"


def add_viewer(hub: Hub) -> str:
    """A viewer at the sending institution, and a bearer token for it."""
    from imex.auth import accounts
    from imex.config import load
    from imex.hub import open_database

    db = open_database(load(hub.folder / "imex.toml", env={}))
    with db.sessions() as s:
        accounts.add_user(
            s,
            username=USER,
            institution=accounts.institution_by_ods(s, route.SOURCE_ODS),
            password=PASSWORD,
            roles=["viewer"],
        )
        s.commit()
    answer = httpx.post(
        f"http://{LOCALHOST}:{hub.http_port}/api/v1/auth/token", json={"username": USER, "password": PASSWORD}
    )
    if answer.status_code != 201:
        raise BenchError(f"no token: {answer.status_code} {answer.text}")
    return answer.json()["token"]


def measure(root: str, headers: dict[str, str], study_uid: str, series_uid: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    with httpx.Client(headers=headers, timeout=120) as web:
        started = time.perf_counter()
        listing = web.get(
            f"{root}/studies/{study_uid}/series/{series_uid}/instances", headers={"Accept": "application/dicom+json"}
        )
        listing.raise_for_status()
        items = listing.json()

        def number(item: dict) -> int:
            return int(item.get("00200013", {}).get("Value", [0])[0])

        sops = [i["00080018"]["Value"][0] for i in sorted(items, key=number)]
        urls = [f"{root}/studies/{study_uid}/series/{series_uid}/instances/{sop}/rendered" for sop in sops]
        first = web.get(urls[0], headers={"Accept": "image/jpeg"})
        first.raise_for_status()
        figures["first image s"] = time.perf_counter() - started

        def scroll(client: httpx.Client, url: str) -> int:
            answer = client.get(url, headers={"Accept": "image/jpeg"})
            if answer.status_code != 200 or answer.content[:2] != b"\xff\xd8":
                raise BenchError(f"{url}: {answer.status_code} {answer.headers.get('content-type')}")
            return len(answer.content)

        started = time.perf_counter()
        for url in urls:
            scroll(web, url)
        figures["scroll 1 fps"] = len(urls) / (time.perf_counter() - started)

    clients = [httpx.Client(headers=headers, timeout=120) for _ in range(6)]
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda k: scroll(clients[k % 6], urls[k]), range(len(urls))))
        figures["scroll 6 fps"] = len(urls) / (time.perf_counter() - started)
    finally:
        for c in clients:
            c.close()
    with httpx.Client(headers=headers, timeout=120) as web:
        started = time.perf_counter()
        for url in urls:
            scroll(web, url)
        figures["scroll again fps"] = len(urls) / (time.perf_counter() - started)
    return figures


def run_imex(data: Path, count: int, work: Path, ids: tuple[str, str]) -> dict[str, float]:
    hub = Hub(work, dest_port=peers.free_port(), fsync=False).start()
    try:
        push(data, hub.dicom_port, route.HUB_AET, count)
        hub.wait_query("SELECT count(*) FROM instances", lambda rows: rows[0][0] == count, 60, "instances indexed")
        token = add_viewer(hub)
        return measure(f"http://{LOCALHOST}:{hub.http_port}/dicomweb", {"Authorization": f"Bearer {token}"}, *ids)
    finally:
        hub.stop()


def run_orthanc(data: Path, count: int, work: Path, ids: tuple[str, str]) -> dict[str, float]:
    orthanc = Orthanc(
        work,
        aet="ORTHANC",
        extra_config={"Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}},
    )
    orthanc.start()
    try:
        push(data, orthanc.dicom_port, "ORTHANC", count)
        return measure(f"{orthanc.base_url}/dicom-web", {}, *ids)
    finally:
        orthanc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--data", help="study folder to reuse (generated there when empty or missing)")
    args = parser.parse_args(argv)
    if not peers.have_dcmtk() or not peers.have_orthanc() or not Path(DICOMWEB_PLUGIN).exists():
        print(
            "this benchmark needs dcmtk, Orthanc and its DICOMweb plugin: apt-get install dcmtk orthanc "
            "orthanc-dicomweb",
            file=sys.stderr,
        )
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="imex-bench-viewer-"))
    data = prepare_data(args, scratch)
    files = study_files(data)
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    ids = (first.StudyInstanceUID, first.SeriesInstanceUID)
    runs: dict[str, list[dict[str, float]]] = {"imex": [], "Orthanc": []}
    for k in range(args.repeat):
        for name, run in (("imex", run_imex), ("Orthanc", run_orthanc)):
            figures = run(data, len(files), scratch / f"{k}-{name}", ids)
            runs[name].append(figures)
            print(
                f"run {k + 1} {name}: " + ", ".join(f"{key} {value:.2f}" for key, value in figures.items()), flush=True
            )
    print(f"\n{len(files)} instances, median of {args.repeat} run(s)\n")
    print("| | imex | Orthanc |\n|---|---|---|")
    for key in runs["imex"][0]:
        med = {name: statistics.median(r[key] for r in rs) for name, rs in runs.items()}
        print(f"| {key} | {med['imex']:.2f} | {med['Orthanc']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
