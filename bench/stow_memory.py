#!/usr/bin/env python3
"""STOW-RS memory benchmark: the hub's resident memory while one large STOW-RS request is stored.

A fresh `imex serve` subprocess (bench/route.py's Hub) gets one multipart/related request of N large
multi-frame instances (100 MiB each by default, 3 of them: a 300 MiB request), streamed by the client from
files so the client's own memory is not the hub's. The hub's VmRSS before the request and its peak
(VmHWM, the high-water mark of resident memory since it started) after are read from /proc.

    PYTHONPATH=tests/helpers python bench/stow_memory.py                 # 3 x 100 MiB
    PYTHONPATH=tests/helpers python bench/stow_memory.py --instances 2 --mib 150
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import route  # bench/route.py, next to this script
from route import LOCALHOST, Hub, peers

USER, PASSWORD = "bench_sender", "bench sender correct horse battery"


def big_instances(folder: Path, count: int, mib: int) -> list[Path]:
    """`count` multi-frame CT instances of about `mib` MiB each (512 x 512 x 16-bit frames)."""
    from imex.samples import make_study

    files = make_study(folder / "seed", series=1, instances_per_series=count, modality="CT", rows=512, columns=512)
    frame = 512 * 512 * 2
    frames = max(1, mib * 1024 * 1024 // frame)
    out = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.NumberOfFrames = frames
        ds.PixelData = secrets.token_bytes(frame) * frames
        target = folder / f"big{k}.dcm"
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
    return out


def body(files: list[Path], boundary: str) -> Iterator[bytes]:
    for path in files:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def memory(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) // 1024  # MiB
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--mib", type=int, default=100, help="size of each instance in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imex-stow-") as tmp:
        work = Path(tmp)
        files = big_instances(work / "data", args.instances, args.mib)
        size = sum(p.stat().st_size for p in files)
        hub = Hub(work / "hub", dest_port=peers.free_port(), fsync=False).start()
        try:
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
                    roles=["sender"],
                )
                s.commit()
            root = f"http://{LOCALHOST}:{hub.http_port}"
            token = httpx.post(f"{root}/api/v1/auth/token", json={"username": USER, "password": PASSWORD}).json()[
                "token"
            ]
            assert hub.proc is not None
            time.sleep(2)
            before = memory(hub.proc.pid)
            boundary = "bench-" + secrets.token_hex(8)
            started = time.perf_counter()
            answer = httpx.post(
                f"{root}/dicomweb/studies",
                content=body(files, boundary),
                timeout=600,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                },
            )
            took = time.perf_counter() - started
            after = memory(hub.proc.pid)
            stored = len(answer.json().get("00081199", {}).get("Value", [])) if answer.status_code < 500 else 0
            print(
                f"request {size / 2**20:.0f} MiB ({args.instances} instances): HTTP {answer.status_code}, "
                f"{stored} stored, {took:.1f} s"
            )
            print(
                f"hub RSS before {before['VmRSS']} MiB, peak {after['VmHWM']} MiB "
                f"(+{after['VmHWM'] - before['VmRSS']} MiB), after {after['VmRSS']} MiB"
            )
        finally:
            hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
