#!/usr/bin/env python3
"""Routing benchmark: how fast a CT study goes through imex, compared with dcmtk and Orthanc.

In one run, on a 300-instance 512x512 16-bit CT (about 158 MB) made by imex.samples:

  a. storescu -> storescp                  the limit: dcmtk on both ends, nothing in between
  b. storescu -> imex                      ingest: until storescu exits (every instance acknowledged)
  c. storescu -> imex -> storescp          store-and-forward: until the last file is complete at the
                                           destination, with the stability wait shown separately
  d. storescu -> Orthanc A                 Orthanc's ingest
     Orthanc A -> Orthanc B                POST /modalities/B/store (synchronous), timed at B
     Orthanc A -> storescp                 the same forward to the destination imex sends to in (c)

Every dcmtk tool and Orthanc runs with TCP_NODELAY=1 (imex sets TCP_NODELAY itself); nothing else about
the peers is tuned. imex runs as a real `imex --config FILE serve` subprocess with a fresh data folder for
every scenario and repeat. See bench/README.md for what the figures mean.

    PYTHONPATH=tests/helpers python bench/route.py                      # 300 instances, once
    PYTHONPATH=tests/helpers python bench/route.py --repeat 3 --no-fsync
    PYTHONPATH=tests/helpers python bench/route.py --data /tmp/ct300    # generate once, reuse afterwards

(tests/helpers holds peers.py, the tests' dcmtk and Orthanc helpers.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peers  # tests/helpers/peers.py, the dcmtk and Orthanc helpers the tests use: PYTHONPATH=tests/helpers
from peers import LOCALHOST, Orthanc, StoreSCP, free_port, run_dcmtk

SOURCE_AET = "STORESCU"  # storescu's calling AE title, registered as the source node
DEST_AET = "RYJPACS"  # the destination storescp
HUB_AET = "IMEX"
SOURCE_ODS, DEST_ODS = "RJZ", "RYJ"  # the hub answers to DEST_ODS as an alias of the destination
STABLE_SECONDS = 0.5
SCAN_INTERVAL = 0.05
POLL_INTERVAL = 0.05
MB = 1_000_000


class BenchError(RuntimeError):
    """A scenario did not do what it should (a refused instance, a missing file): no figure is valid."""


# --------------------------------------------------------------------------- data


def study_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def prepare_data(args: argparse.Namespace, scratch: Path) -> Path:
    """The study folder: --data when given (generated there when empty), else a temp folder."""
    folder = Path(args.data).expanduser().absolute() if args.data else scratch / "study"
    found = study_files(folder) if folder.exists() else []
    if found:
        if len(found) != args.instances:
            print(
                f"note: reusing {len(found)} instances in {folder} (--instances {args.instances} ignored; "
                "give an empty --data folder to generate another size)"
            )
        else:
            print(f"reusing {len(found)} instances in {folder}")
        return folder
    from imex.samples import make_ct_study

    started = time.monotonic()
    print(f"generating a {args.instances}-instance 512x512 16-bit CT study in {folder} ...", flush=True)
    make_ct_study(folder, instances=args.instances)
    print(f"  done in {time.monotonic() - started:.1f} s")
    return folder


# --------------------------------------------------------------------------- peers


def push(data: Path, port: int, called_aet: str, expected: int) -> tuple[float, float]:
    """storescu the whole folder on one association; returns (start, end) wall-clock times.

    Runs with -v, not -d as peers.storescu does: -d dumps every PDU and costs storescu about a
    quarter of its time on this study. -v still names the status of every response."""
    args = ["-v", "-aet", SOURCE_AET, "-aec", called_aet, "+sd", "+r", "-nh", LOCALHOST, str(port), str(data)]
    start = time.time()
    proc = run_dcmtk("storescu", args, timeout=600)
    end = time.time()
    output = proc.stdout + proc.stderr
    responses = [line for line in output.splitlines() if "Received Store Response" in line]
    ok = sum(1 for line in responses if line.rstrip().endswith("(Success)"))
    if proc.returncode != 0 or ok != expected:
        raise BenchError(
            f"storescu -> {called_aet}:{port}: exit {proc.returncode}, {ok} of {expected} "
            f"instances acknowledged with Success:\n{output[-2500:]}"
        )
    return start, end


def wait_destination(dest: StoreSCP, count: int, timeout: float, check: Callable[[], None] | None = None) -> float:
    """Wall-clock time at which the last of `count` files was complete at a storescp.

    Counts files cheaply while the transfer runs (so the check does not compete for the CPU), then
    lets StoreSCP.wait_for prove every file whole; the time is the newest file's mtime, i.e. when
    storescp finished writing it, independent of how often we look."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1
    while len(dest.files()) < count:
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"{dest.aet}: {len(dest.files())} of {count} files after {timeout:.0f} s")
        if check is not None and now > next_check:
            check()  # raises when the sender is known to be stuck
            next_check = now + 1
        time.sleep(0.01)
    done = dest.wait_for(count, timeout=max(deadline - time.monotonic(), 30))
    return max(p.stat().st_mtime for p in done)


def storescp(folder: Path, aet: str) -> StoreSCP:
    """storescp +xa -pm -dhl -od DIR (-uf names files by SOP Instance UID, -v logs to a file)."""
    return StoreSCP(folder, aet=aet, bit_preserving=False)


# --------------------------------------------------------------------------- imex


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_hub_config(
    path: Path, *, data_dir: Path, dicom_port: int, http_port: int, dest_port: int, fsync: bool
) -> Path:
    settings = {
        "": {"data_dir": str(data_dir), "log_level": "INFO"},
        "dicom": {"ae_title": HUB_AET, "host": LOCALHOST, "port": dicom_port},
        "http": {"host": LOCALHOST, "port": http_port},
        "routing": {"stable_seconds": STABLE_SECONDS, "scan_interval": SCAN_INTERVAL},
        "delivery": {"poll_interval": POLL_INTERVAL},
        "store": {"fsync": fsync},
    }
    institutions = [
        {"ods": SOURCE_ODS, "name": "King's College Hospital"},
        {"ods": DEST_ODS, "name": "Imperial College Healthcare"},
    ]
    nodes = [
        {
            "name": "KINGS_PACS",
            "ae_title": SOURCE_AET,
            "host": LOCALHOST,
            "port": 11112,
            "institution": SOURCE_ODS,
            "destination": False,
        },
        {"name": "IMPERIAL_PACS", "ae_title": DEST_AET, "host": LOCALHOST, "port": dest_port, "institution": DEST_ODS},
    ]
    lines: list[str] = []
    for section, values in settings.items():
        if section:
            lines.append(f"\n[{section}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    for table, entries in (("institutions", institutions), ("nodes", nodes)):
        for entry in entries:
            lines.append(f"\n[[{table}]]")
            lines += [f"{key} = {_toml(value)}" for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def imex_command() -> list[str]:
    """`imex`, from the same environment as this interpreter when it has the script."""
    script = Path(sys.executable).with_name("imex")
    if script.exists():
        return [str(script)]
    found = shutil.which("imex")
    return [found] if found else [sys.executable, "-m", "imex.cli"]


@dataclass
class Hub:
    """`imex --config FILE serve` as a subprocess, optionally sampled by py-spy."""

    folder: Path
    dest_port: int
    fsync: bool
    profile: Path | None = None
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None

    @property
    def db_path(self) -> Path:
        return self.folder / "data" / "imex.db"

    @property
    def log_path(self) -> Path:
        return self.folder / "imex.log"

    def start(self, timeout: float = 60) -> Hub:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = write_hub_config(
            self.folder / "imex.toml",
            data_dir=self.folder / "data",
            dicom_port=self.dicom_port,
            http_port=self.http_port,
            dest_port=self.dest_port,
            fsync=self.fsync,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMEX_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*imex_command(), "--config", str(config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"imex serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                peers.wait_port(self.dicom_port, timeout=0.2)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise BenchError(f"imex serve not listening after {timeout} s:\n{self.log()[-3000:]}") from None
        if self.profile is not None:
            self.spy = start_py_spy(self.proc.pid, self.profile)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.spy is not None:  # py-spy writes its file and exits when the process it watches ends
            try:
                self.spy.wait(30)
            except subprocess.TimeoutExpired:
                self.spy.send_signal(signal.SIGINT)
                try:
                    self.spy.wait(15)
                except subprocess.TimeoutExpired:
                    self.spy.kill()
                    self.spy.wait(5)
            self.spy = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def check_forward(self) -> None:
        """Fail early, with the reason, when the hub died, quarantined the study or gave up the transfer."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"imex serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        studies = self.query("SELECT route_state, quarantine_reason FROM studies")
        if any(state == "quarantined" for state, _ in studies):
            raise BenchError(f"imex quarantined the study: {studies}")
        transfers = self.query("SELECT state, attempts, instances_sent, last_error FROM transfers")
        # One retry can be honest (a lost association); more means the figure would measure backoff.
        if any(
            state in ("failed", "cancelled") or (attempts >= 3 and error) for state, attempts, _, error in transfers
        ):
            raise BenchError(f"imex transfer ended without delivery: {transfers}\n{self.log()[-2000:]}")

    def problems(self) -> list[str]:
        return [line for line in self.log().splitlines() if " ERROR " in line or "Traceback" in line]

    def query(self, sql: str) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def wait_query(self, sql: str, predicate: Callable[[list[tuple]], bool], timeout: float, what: str) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(sql)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise BenchError(f"imex: {what} not seen after {timeout:.0f} s: {rows}\n{self.log()[-2000:]}")
            time.sleep(0.05)


def start_py_spy(pid: int, folder: Path) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).with_name("py-spy")
    binary = str(spy) if spy.exists() else shutil.which("py-spy")
    if not binary:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"imex-{pid}.txt"
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--nonblocking",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(*procs: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU time the processes (all their threads) have used so far; Linux only (else 0)."""
    total = 0.0
    for proc in procs:
        if proc is None:
            continue
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def epoch(text: str) -> float:
    """A timestamp column (naive UTC, as imex stores them) as wall-clock seconds."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


# --------------------------------------------------------------------------- scenarios


@dataclass
class Context:
    data: Path
    count: int
    work: Path
    fsync: bool
    profile: Path | None
    info: dict[str, str] = field(default_factory=dict)


def scenario_direct(ctx: Context, work: Path) -> dict[str, float]:
    with storescp(work / "dest", DEST_AET) as dest:
        start, end = push(ctx.data, dest.port, DEST_AET, ctx.count)
        wait_destination(dest, ctx.count, timeout=120)
    return {"direct": end - start}


def scenario_imex_ingest(ctx: Context, work: Path) -> dict[str, float]:
    # Sent to the hub's own AE title: stored and indexed, never forwarded (it ends in quarantine).
    hub = Hub(
        work / "hub", dest_port=free_port(), fsync=ctx.fsync, profile=ctx.profile / "ingest" if ctx.profile else None
    )
    try:
        hub.start()
        cpu = cpu_seconds(hub.proc)
        start, end = push(ctx.data, hub.dicom_port, HUB_AET, ctx.count)
        cpu = cpu_seconds(hub.proc) - cpu
        ((indexed,),) = hub.query("SELECT count(*) FROM instances")
        if indexed != ctx.count:
            raise BenchError(f"imex acknowledged {ctx.count} instances but indexed {indexed}")
    finally:
        hub.stop()
    _report_problems(hub)
    return {"imex_ingest": end - start, "imex_ingest@cpu": cpu}


def scenario_imex_forward(ctx: Context, work: Path) -> dict[str, float]:
    with storescp(work / "dest", DEST_AET) as dest:
        hub = Hub(
            work / "hub", dest_port=dest.port, fsync=ctx.fsync, profile=ctx.profile / "forward" if ctx.profile else None
        )
        try:
            hub.start()
            cpu0 = cpu_seconds(hub.proc)
            start, pushed = push(ctx.data, hub.dicom_port, DEST_ODS, ctx.count)
            cpu1 = cpu_seconds(hub.proc)
            arrived = wait_destination(dest, ctx.count, timeout=600, check=hub.check_forward)
            cpu2 = cpu_seconds(hub.proc)  # a little late (the file count is polled): an upper bound
            rows = hub.wait_query(
                "SELECT t.state, t.instances_sent, t.created_at, t.started_at, t.delivered_at, "
                "s.first_received_at, s.last_received_at FROM transfers t JOIN studies s ON s.id = t.study_id",
                lambda r: len(r) == 1 and r[0][0] == "delivered",
                30,
                "the transfer delivered",
            )
        finally:
            hub.stop()
    _report_problems(hub)
    _state, sent, routed_at, claimed_at, _delivered_at, _first_at, last_at = rows[0]
    if sent != ctx.count:
        raise BenchError(f"imex delivered {sent} of {ctx.count} instances")
    routed, claimed, last = epoch(routed_at), epoch(claimed_at), epoch(last_at)
    total = arrived - start
    return {
        "imex_sf_push": pushed - start,
        "imex_sf_push@cpu": cpu1 - cpu0,
        "imex_sf": total,
        "imex_sf@cpu": cpu2 - cpu0,
        "imex_sf_forward_phase@cpu": cpu2 - cpu1,
        "imex_sf_minus_stable": total - STABLE_SECONDS,
        "imex_sf_forward_phase": arrived - pushed,
        "imex_sf_stable_wait": routed - last,
        "imex_sf_claim": claimed - routed,
        "imex_sf_send": arrived - claimed,
    }


def scenario_orthanc(ctx: Context, work: Path) -> dict[str, float]:
    with ExitStack() as stack:
        dest = stack.enter_context(storescp(work / "dest", "DESTSCP"))
        orthanc_b = Orthanc(work / "orthanc-b", aet="ORTHANCB")
        stack.callback(orthanc_b.stop)
        orthanc_b.start()
        orthanc_a = Orthanc(
            work / "orthanc-a",
            aet="ORTHANCA",
            modalities={"B": ("ORTHANCB", LOCALHOST, orthanc_b.dicom_port), "DEST": ("DESTSCP", LOCALHOST, dest.port)},
        )
        stack.callback(orthanc_a.stop)
        orthanc_a.start()
        ctx.info.setdefault("orthanc", str(orthanc_a.get("/system").get("Version")))

        proc_a, proc_b = getattr(orthanc_a, "_proc", None), getattr(orthanc_b, "_proc", None)
        cpu0 = cpu_seconds(proc_a)
        start, end = push(ctx.data, orthanc_a.dicom_port, "ORTHANCA", ctx.count)
        cpu_ingest = cpu_seconds(proc_a) - cpu0
        stored = orthanc_a.statistics()["CountInstances"]
        studies = orthanc_a.study_ids()
        if stored != ctx.count or len(studies) != 1:
            raise BenchError(f"Orthanc A holds {stored} instances in {len(studies)} studies")

        cpu0 = cpu_seconds(proc_a, proc_b)
        ab_start = time.time()
        orthanc_a.store_to("B", studies, synchronous=True)
        deadline = time.monotonic() + 60
        while orthanc_b.statistics()["CountInstances"] < ctx.count:  # normally true at once
            if time.monotonic() > deadline:
                raise BenchError(f"Orthanc B holds {orthanc_b.statistics()['CountInstances']} of {ctx.count}")
            time.sleep(0.02)
        ab_end = time.time()
        cpu_ab = cpu_seconds(proc_a, proc_b) - cpu0

        cpu0 = cpu_seconds(proc_a)
        scp_start = time.time()
        orthanc_a.store_to("DEST", studies, synchronous=True)
        cpu_scp = cpu_seconds(proc_a) - cpu0
        scp_end = wait_destination(dest, ctx.count, timeout=120)
    ingest = end - start
    return {
        "orthanc_ingest": ingest,
        "orthanc_ingest@cpu": cpu_ingest,
        "orthanc_ab": ab_end - ab_start,
        "orthanc_ab@cpu": cpu_ab,
        "orthanc_sf": ingest + ab_end - ab_start,
        "orthanc_sf@cpu": cpu_ingest + cpu_ab,
        "orthanc_a_scp": scp_end - scp_start,
        "orthanc_a_scp@cpu": cpu_scp,
        "orthanc_sf_scp": ingest + scp_end - scp_start,
        "orthanc_sf_scp@cpu": cpu_ingest + cpu_scp,
    }


def _report_problems(hub: Hub) -> None:
    problems = hub.problems()
    if problems:
        print(f"  warning: imex logged {len(problems)} error line(s), e.g. {problems[0][:200]}")


SCENARIOS: list[tuple[str, Callable[[Context, Path], dict[str, float]]]] = [
    ("a", scenario_direct),
    ("b", scenario_imex_ingest),
    ("c", scenario_imex_forward),
    ("d", scenario_orthanc),
]

# (key, label); None is a separator.
ROWS: list[tuple[str, str] | None] = [
    ("direct", "a. storescu -> storescp (the limit)"),
    None,
    ("imex_ingest", "b. storescu -> imex (ingest)"),
    None,
    ("imex_sf", "c. storescu -> imex -> storescp, total"),
    ("imex_sf_minus_stable", "   total minus stable_seconds"),
    ("imex_sf_push", "   push (storescu -> imex)"),
    ("imex_sf_forward_phase", "   forward phase (storescu done -> last file)"),
    ("imex_sf_stable_wait", "     of which stable wait (last in -> routed)"),
    ("imex_sf_claim", "     of which routed -> claimed"),
    ("imex_sf_send", "     of which claimed -> last file"),
    None,
    ("orthanc_ingest", "d. storescu -> Orthanc A (ingest)"),
    ("orthanc_ab", "   Orthanc A -> Orthanc B (forward alone)"),
    ("orthanc_sf", "   store-and-forward (ingest + A -> B)"),
    ("orthanc_a_scp", "   Orthanc A -> storescp (forward alone)"),
    ("orthanc_sf_scp", "   store-and-forward to storescp"),
]
# Rows whose rate means something (the others are parts of a trip, not a throughput).
RATED = {
    "direct",
    "imex_ingest",
    "imex_sf",
    "imex_sf_minus_stable",
    "imex_sf_push",
    "imex_sf_send",
    "orthanc_ingest",
    "orthanc_ab",
    "orthanc_sf",
    "orthanc_a_scp",
    "orthanc_sf_scp",
}

# (label, numerator, denominator, target): numerator / denominator > 1 means imex is faster.
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("imex ingest vs Orthanc ingest", "orthanc_ingest", "imex_ingest", 1.5),
    ("imex s&f vs Orthanc s&f (ingest + A -> B)", "orthanc_sf", "imex_sf", 2.0),
    ("imex s&f minus stable_seconds vs Orthanc s&f (A -> B)", "orthanc_sf", "imex_sf_minus_stable", None),
    ("imex s&f vs Orthanc A -> B alone", "orthanc_ab", "imex_sf", None),
    ("imex forward phase vs Orthanc A -> B alone", "orthanc_ab", "imex_sf_forward_phase", None),
    ("imex s&f vs Orthanc s&f to storescp (same destination)", "orthanc_sf_scp", "imex_sf", None),
    ("imex ingest vs the dcmtk limit (a)", "direct", "imex_ingest", None),
]


# --------------------------------------------------------------------------- report


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = {k for run in runs for k in run}
    return {
        k: {"best": min(r[k] for r in runs if k in r), "median": statistics.median(r[k] for r in runs if k in r)}
        for k in keys
    }


def report(summary: dict[str, dict[str, float]], count: int, total_bytes: int, repeats: int) -> str:
    head = f"{'':52} {'best s':>8} {'median s':>9} {'inst/s':>8} {'MB/s':>8} {'CPU s':>7}"
    lines = [head, "-" * len(head)]
    for row in ROWS:
        if row is None:
            if lines[-1]:
                lines.append("")
            continue
        key, label = row
        if key not in summary:
            continue
        best, median = summary[key]["best"], summary[key]["median"]
        rate = f"{'':8} {'':8}"
        if key in RATED and median > 0:
            rate = f"{count / median:8.0f} {total_bytes / MB / median:8.1f}"
        cpu = f"{summary[key + '@cpu']['median']:7.2f}" if key + "@cpu" in summary else ""
        lines.append(f"{label:52} {best:8.2f} {median:9.2f} {rate} {cpu}".rstrip())
    if not lines[-1]:
        lines.pop()
    lines += [
        "",
        (
            f"rates from the median of {repeats} run(s); CPU s: median CPU time (user + system, all "
            "threads) of the server process(es) measured: imex, Orthanc A (+ B for A -> B)"
        ),
        "ratios below are Orthanc time / imex time (> 1: imex faster), from the medians",
        "",
    ]
    for label, num, den, target in RATIOS:
        if num in summary and den in summary and summary[den]["median"] > 0:
            value = summary[num]["median"] / summary[den]["median"]
            if num == "direct":
                label_value = f"imex ingest takes {1 / value:.1f}x the limit's time"
            else:
                mark = "" if target is None else f"  target >= {target:g}x: {'met' if value >= target else 'NOT met'}"
                label_value = f"{value:5.2f}x{mark}"
            lines.append(f"{label:58} {label_value}")
    return "\n".join(lines)


def machine_busy() -> float:
    """CPU-seconds the whole machine has spent busy since boot (Linux; 0 elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


def own_cpu() -> float:
    """CPU-seconds of this script and of every child it has waited for (peers, hubs, storescu)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def imex_revision() -> str:
    """The commit of the imex that runs (the package this interpreter imports, as the hub does)."""
    import imex

    where = Path(imex.__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    if not rev:
        return f"{getattr(imex, '__version__', '?')} at {where}"
    return rev + (" + uncommitted changes" if dirty else "")


def tool_versions() -> dict[str, str]:
    info = {
        "imex": imex_revision(),
        "python": platform.python_version(),
        "cores": str(os.cpu_count()),
        "load average at start": f"{os.getloadavg()[0]:.2f}",
    }
    try:
        out = run_dcmtk("storescu", ["--version"], timeout=10).stdout.splitlines()
        line = next((line for line in out if "storescu" in line), out[0] if out else "?")
        info["dcmtk"] = line.replace("$dcmtk:", "").replace("$", "").strip()
    except (OSError, subprocess.SubprocessError):
        info["dcmtk"] = "?"
    try:
        import pydicom
        import pynetdicom

        info["pynetdicom"], info["pydicom"] = pynetdicom.__version__, pydicom.__version__
    except ImportError:
        pass
    return info


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300, help="instances in the CT study (default 300)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every scenario; best and median shown")
    parser.add_argument("--data", help="study folder to reuse (generated there when empty or missing)")
    parser.add_argument("--no-fsync", action="store_true", help="run imex with [store] fsync = false")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, stores, configs)")
    parser.add_argument("--only", default="abcd", help="scenarios to run, e.g. 'bc' (default abcd)")
    parser.add_argument("--json", dest="json_path", help="also write the raw figures to this JSON file")
    parser.add_argument(
        "--profile",
        help="sample imex with py-spy into this folder (raw stacks, per "
        "thread); the figures of such a run are not comparable",
    )
    args = parser.parse_args(argv)
    if args.instances < 1 or args.repeat < 1:
        parser.error("--instances and --repeat must be at least 1")
    if set(args.only) - set("abcd"):
        parser.error("--only takes letters among a, b, c, d")
    return args


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every peer and hub started so far is stopped."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not peers.have_dcmtk() or ("d" in args.only and not peers.have_orthanc()):
        print(
            "this benchmark needs dcmtk (storescu, storescp) and Orthanc: apt-get install dcmtk orthanc",
            file=sys.stderr,
        )
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="imex-bench-"))
    runs: list[dict[str, float]] = []
    try:
        with terminate_cleanly():
            data = prepare_data(args, scratch)
            files = study_files(data)
            count, total_bytes = len(files), sum(p.stat().st_size for p in files)
            ctx = Context(
                data,
                count,
                scratch / "runs",
                fsync=not args.no_fsync,
                profile=Path(args.profile).absolute() if args.profile else None,
            )
            ctx.info.update(tool_versions())
            print(
                f"study: {count} instances, {total_bytes / MB:.1f} MB; imex fsync "
                f"{'on' if ctx.fsync else 'off'}; work folder {scratch}"
            )
            busy0, own0, wall0 = machine_busy(), own_cpu(), time.monotonic()
            for k in range(1, args.repeat + 1):
                run: dict[str, float] = {}
                for letter, scenario in SCENARIOS:
                    if letter not in args.only:
                        continue
                    figures = scenario(ctx, ctx.work / f"{k}{letter}")
                    run.update(figures)
                    shown = ", ".join(f"{key} {value:.2f} s" for key, value in figures.items() if "@" not in key)
                    print(f"  run {k}/{args.repeat} {letter}: {shown}", flush=True)
                runs.append(run)
            summary = summarise(runs)
            wall = time.monotonic() - wall0
            others = max(machine_busy() - busy0 - (own_cpu() - own0), 0.0)
            noise = f"{others:.1f} s of the {wall * (os.cpu_count() or 1):.1f} CPU-seconds the machine had"
            ctx.info["other processes' CPU during the runs"] = noise
            print()
            print(", ".join(f"{k} {v}" for k, v in ctx.info.items() if not k.startswith("other")))
            print(
                f"study: {count} instances, {total_bytes / MB:.1f} MB; imex [store] fsync "
                f"{'on' if ctx.fsync else 'off'}, stable_seconds {STABLE_SECONDS}, scan_interval {SCAN_INTERVAL}, "
                f"delivery poll_interval {POLL_INTERVAL}" + ("; PROFILED with py-spy" if ctx.profile else "")
            )
            print(f"other processes' CPU during the runs: {noise}")
            print()
            print(report(summary, count, total_bytes, len(runs)))
            if args.json_path:
                Path(args.json_path).write_text(
                    json.dumps(
                        {
                            "info": ctx.info,
                            "fsync": ctx.fsync,
                            "instances": count,
                            "bytes": total_bytes,
                            "runs": runs,
                            "summary": summary,
                        },
                        indent=2,
                    )
                )
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        print(f"logs, configs and stores kept in {scratch}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
