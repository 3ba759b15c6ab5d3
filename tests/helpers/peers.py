"""Real DICOM peers (dcmtk tools, Orthanc) run as subprocesses for tests and benchmarks.

Testing the hub against independent implementations catches what a pynetdicom-only test
cannot: other negotiation habits, other status handling, byte-level differences.
Facts these helpers rely on are in /work/shared/PEERS.md: every peer gets TCP_NODELAY=1
(otherwise Nagle adds ~50 ms per instance), and since storescp and Orthanc listen on all
interfaces, we only ever talk to 127.0.0.1 on free high ports.

Plain module in tests/helpers/ (pytest's ``pythonpath``), imported as ``import peers``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

ORTHANC_BIN = "/usr/sbin/Orthanc"
LOCALHOST = "127.0.0.1"

# Ports below the kernel's ephemeral range, so a port we hand out cannot be taken meanwhile
# by the local end of some outgoing connection.
_PORT_RANGE = (20000, 32000)
# under pytest-xdist each worker hands out ports from its own slice of the range, so two workers cannot
# take the same free port in the moment before either binds it
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKER.startswith("gw") and _WORKERS > 1:
    _SLICE = (_PORT_RANGE[1] - _PORT_RANGE[0]) // _WORKERS
    _PORT_RANGE = (_PORT_RANGE[0] + int(_WORKER[2:]) * _SLICE, _PORT_RANGE[0] + (int(_WORKER[2:]) + 1) * _SLICE)
_given_ports: set[int] = set()


def have_dcmtk() -> bool:
    """True when the dcmtk tools the helpers use are installed (for skip markers)."""
    return all(shutil.which(t) for t in ("storescp", "storescu", "echoscu"))


def have_orthanc() -> bool:
    """True when the Orthanc binary is installed (for skip markers)."""
    return Path(ORTHANC_BIN).exists()


def free_port() -> int:
    """A TCP port free on all interfaces, never handed out twice by this process."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError("no free TCP port found")


def wait_port(port: int, timeout: float = 10, host: str = LOCALHOST) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def peer_env() -> dict[str, str]:
    """Environment for peers: TCP_NODELAY=1 makes dcmtk and Orthanc disable Nagle."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def _log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """Terminate, then kill if the process does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    """Wait for the port, failing early with the log when the peer dies (e.g. port in use)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode}:\n{_log_tail(log)}")
        try:
            wait_port(port, timeout=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                _stop_process(proc)
                raise TimeoutError(f"peer not listening on {port}:\n{_log_tail(log)}") from None


# --------------------------------------------------------------------------- dcmtk storescp


def file_is_complete(path: Path) -> bool:
    """Whether a received file is whole: storescp +B writes files while receiving them.

    pydicom reads a truncated file silently (native pixel data come back short, encapsulated
    pixel data are dropped with a warning), so check the pixel data against the image size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
        return False
    if "Rows" not in ds:
        return True  # not an image: size stability is all we can check
    if "PixelData" not in ds:
        return False
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return True
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = ds.Rows * ds.Columns * ds.get("SamplesPerPixel", 1) * frames
    expected = expected * ds.BitsAllocated // 8
    return len(ds.PixelData) >= expected


class StoreSCP:
    """dcmtk storescp as a destination PACS, stoppable and restartable on the same port.

    Files land in out_dir, named by SOP Instance UID (``-uf``, a repeated delivery overwrites)
    or uniquely (``+uf``, repeated deliveries stay visible as separate files). The verbose log
    goes to ``storescp-<aet>-<port>.log`` next to out_dir. storescp serves one association at
    a time.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        aet: str = "STORESCP",
        port: int | None = None,
        accept_all: bool = True,
        promiscuous: bool = True,
        bit_preserving: bool = True,
        unique_filenames: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.aet = aet
        self.port = port or free_port()
        self.accept_all = accept_all
        self.promiscuous = promiscuous
        self.bit_preserving = bit_preserving
        self.unique_filenames = unique_filenames
        self.extra_args = list(extra_args)
        self.log_path = self.out_dir.parent / f"storescp-{aet}-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._complete: set[Path] = set()

    def command(self) -> list[str]:
        """The storescp command line (without the output redirection)."""
        cmd = ["storescp", "-v", "-aet", self.aet, "-dhl", "-od", str(self.out_dir)]
        if self.accept_all:
            cmd.append("+xa")
        if self.promiscuous:
            cmd.append("-pm")
        if self.bit_preserving:
            cmd.append("+B")
        cmd.append("+uf" if self.unique_filenames else "-uf")
        return [*cmd, *self.extra_args, str(self.port)]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10) -> StoreSCP:
        """Start (or restart after stop()) on the same port; returns when it listens."""
        if self.running:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=peer_env())
        _wait_listening(self._proc, self.port, self.log_path, timeout)
        return self

    def stop(self) -> None:
        """Take the destination down (connections are then refused)."""
        _stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        """The storescp log so far (for assertion messages)."""
        return _log_tail(self.log_path, chars=1_000_000)

    def files(self) -> list[Path]:
        """Received files, possibly including one still being written."""
        if not self.out_dir.exists():
            return []
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())

    def sop_uids(self) -> list[str]:
        """SOP Instance UIDs of the received files, in file name order."""
        return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.files()]

    def wait_for(self, count: int, timeout: float = 30) -> list[Path]:
        """Wait until at least count received files are complete; return the complete ones.

        A file counts when its size did not change since the previous poll and its pixel
        data are whole, so a transfer in progress is never mistaken for a delivery.
        """
        deadline = time.monotonic() + timeout
        sizes: dict[Path, int] = {}
        while True:
            for path in self.files():
                if path in self._complete:
                    continue
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                if sizes.get(path) == size and file_is_complete(path):
                    self._complete.add(path)
                sizes[path] = size
            done = sorted(p for p in self._complete if p.exists())
            if len(done) >= count:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.aet}: {len(done)} of {count} files complete after {timeout}s ({len(sizes)} present)"
                )
            time.sleep(0.05)

    def clear(self) -> None:
        """Delete received files, so a test can count a second delivery from zero."""
        for path in self.files():
            path.unlink()
        self._complete.clear()


# --------------------------------------------------------------------------- dcmtk SCUs


def run_dcmtk(tool: str, args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool with TCP_NODELAY=1, capturing stdout and stderr as text."""
    return subprocess.run([tool, *args], capture_output=True, text=True, env=peer_env(), timeout=timeout)


@dataclass
class StoreResult:
    """What storescu saw: exit code, full output and the receiver's C-STORE statuses.

    storescu exits 0 even when the receiver answers with a failure status, so tests must
    look at ``statuses`` (one per response, in order, e.g. 0x0000, 0xA700, 0xB000).
    """

    returncode: int
    output: str
    statuses: list[int] = field(default_factory=list)
    responses: list[tuple[str | None, int]] = field(default_factory=list)  # (SOP UID, status)

    @property
    def ok(self) -> bool:
        """True when storescu ran and every response was Success."""
        return self.returncode == 0 and bool(self.statuses) and all(s == 0 for s in self.statuses)


def parse_store_responses(output: str) -> list[tuple[str | None, int]]:
    """(SOP Instance UID, status) of each C-STORE RSP dump in storescu's debug output.

    With ``-v`` storescu only names the status ("Received Store Response (Refused:
    OutOfResources)", or "Unknown Status: 0x107"); the numeric code appears only in the
    ``-d`` dump of the response: "DIMSE Status                  : 0xa700: Refused: ...".
    """
    responses: list[tuple[str | None, int]] = []
    in_rsp = False
    uid: str | None = None
    for line in output.splitlines():
        text = line.removeprefix("D: ").strip()
        if text.startswith("Message Type") and text.endswith("C-STORE RSP"):
            in_rsp, uid = True, None
        elif in_rsp and text.startswith("Affected SOP Instance UID"):
            uid = text.split(":", 1)[1].strip()
        elif in_rsp and text.startswith("DIMSE Status"):
            code = text.split(":", 1)[1].strip().split(":", 1)[0]
            responses.append((uid, int(code, 16)))
            in_rsp = False
    return responses


def storescu(
    paths: Iterable[Path],
    port: int,
    called_aet: str,
    calling_aet: str = "STORESCU",
    host: str = LOCALHOST,
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    halt: bool = False,
) -> StoreResult:
    """Send files (or folders, scanned recursively) with dcmtk storescu on one association.

    storescu halts at the first failure status by default; ``halt=False`` passes ``-nh`` so
    every file gets an answer. Compressed files need their proposal option in extra_args
    (``-xr`` RLE, ``-xs`` JPEG lossless, ...). Runs with ``-d`` to see numeric statuses.
    """
    paths = [str(p) for p in paths]
    args = ["-d", "-aet", calling_aet, "-aec", called_aet]
    if any(Path(p).is_dir() for p in paths):
        args += ["+sd", "+r"]
    if not halt:
        args.append("-nh")
    proc = run_dcmtk("storescu", [*args, *extra_args, host, str(port), *paths], timeout)
    output = proc.stdout + proc.stderr
    responses = parse_store_responses(output)
    return StoreResult(proc.returncode, output, [s for _, s in responses], responses)


def echoscu(
    port: int,
    called_aet: str,
    calling_aet: str = "ECHOSCU",
    host: str = LOCALHOST,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with dcmtk echoscu; returncode 0 means the peer answered Success."""
    args = ["-v", "-aet", calling_aet, "-aec", called_aet, host, str(port)]
    return run_dcmtk("echoscu", args, timeout)


# --------------------------------------------------------------------------- Orthanc


class Orthanc:
    """A private Orthanc 1.10 process with its own config, storage and free ports.

    ``modalities`` maps names to (AET, host, port): the nodes it may send to or accept
    C-MOVE requests for. REST helpers use urllib only. Stop with stop() or as a context manager.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        http_port: int | None = None,
        dicom_port: int | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="orthanc-"))
        self.aet = aet
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.modalities = dict(modalities or {})
        self.extra_config = dict(extra_config or {})
        self.log_path = self.work_dir / "orthanc.log"
        self.base_url = f"http://{LOCALHOST}:{self.http_port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        """The configuration written to orthanc.json."""
        storage = str(self.work_dir / "storage")
        config: dict[str, Any] = {
            "Name": f"imex-test-{self.aet}",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "UnknownSopClassAccepted": True,
            "SaveJobs": False,
            # Orthanc keeps its SCU association open 5 s by default, which would block a
            # single-association storescp for the next sender.
            "DicomAssociationCloseDelay": 0,
            "DicomModalities": {name: list(node) for name, node in self.modalities.items()},
        }
        config.update(self.extra_config)
        return config

    def start(self, timeout: float = 30) -> Orthanc:
        """Start and wait until GET /system answers and the DICOM port listens."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.work_dir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        self._proc = subprocess.Popen(
            [ORTHANC_BIN, "--no-jobs", f"--logfile={self.log_path}", str(config_path)],
            cwd=self.work_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=peer_env(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                log = _log_tail(self.log_path)
                raise RuntimeError(f"Orthanc exited with {self._proc.returncode}:\n{log}")
            try:
                self.get("/system")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    log = _log_tail(self.log_path)
                    raise TimeoutError(f"Orthanc did not answer:\n{log}") from None
                time.sleep(0.1)
        _wait_listening(self._proc, self.dicom_port, self.log_path, timeout)
        return self

    def stop(self) -> None:
        """Terminate (Orthanc shuts down cleanly on SIGTERM), kill if it hangs."""
        _stop_process(self._proc, timeout=15)
        self._proc = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log(self) -> str:
        return _log_tail(self.log_path, chars=1_000_000)

    # -- REST -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        """Raw REST call; raises urllib.error.HTTPError (with Orthanc's message) on errors."""
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.read()

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post(self, path: str, payload: Any) -> Any:
        raw = self.request("POST", path, json.dumps(payload).encode())
        return json.loads(raw) if raw.strip() else None

    def put(self, path: str, payload: Any) -> Any:
        raw = self.request("PUT", path, json.dumps(payload).encode())
        return json.loads(raw) if raw.strip() else None

    def upload(self, path: Path) -> str:
        """POST /instances; returns Orthanc's instance ID (also if it was already stored)."""
        raw = self.request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
        return str(json.loads(raw)["ID"])

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def instance_sop_uids(self) -> list[str]:
        """SOP Instance UIDs of everything Orthanc holds."""
        return [i["MainDicomTags"]["SOPInstanceUID"] for i in self.get("/instances?expand")]

    def study_ids(self) -> list[str]:
        return list(self.get("/studies"))

    def statistics(self) -> dict[str, Any]:
        """GET /statistics, e.g. CountInstances, CountStudies, TotalDiskSizeMB."""
        return dict(self.get("/statistics"))

    def get_file(self, instance_id: str) -> bytes:
        """The stored DICOM file, as Orthanc received it."""
        return self.request("GET", f"/instances/{instance_id}/file")

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """PUT /modalities/{name}: a node Orthanc may send to (or move to)."""
        self.put(f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})
        self.modalities[name] = (aet, host, port)

    def store_to(self, modality: str, resource_ids: Sequence[str], synchronous: bool = True) -> Any:
        """C-STORE resources (instance/series/study/patient IDs) to a configured modality."""
        payload = {"Resources": list(resource_ids), "Synchronous": synchronous}
        return self.post(f"/modalities/{modality}/store", payload)

    def echo(self, modality: str) -> bool:
        """C-ECHO from Orthanc to a configured modality."""
        try:
            self.post(f"/modalities/{modality}/echo", {})
            return True
        except urllib.error.HTTPError:
            return False
