"""`imex send`: push files, folders, zips and CDs (DICOMDIR) to a DICOM node, usually the hub.

This is how a patient's CD reaches the network: every DICOM file found is sent as stored, in its own
transfer syntax, over as few associations as the presentation-context limit allows.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from imex.dicom.scu import Outgoing, is_success, send_all


@dataclass
class PushReport:
    sent: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _candidate_files(path: Path, scratch: ExitStack) -> Iterator[Path]:
    if path.is_dir():
        yield from (p for p in sorted(path.rglob("*")) if p.is_file())
    elif path.name.upper() == "DICOMDIR":
        # a CD: the DICOMDIR indexes the files beside it; sending every file below its folder finds them all
        yield from (p for p in sorted(path.parent.rglob("*")) if p.is_file() and p.name.upper() != "DICOMDIR")
    elif zipfile.is_zipfile(path):
        folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="imex-zip-")))
        with zipfile.ZipFile(path) as archive:
            root = folder.resolve()
            for member in archive.infolist():
                target = (root / member.filename).resolve()
                if member.is_dir() or target == root or not target.is_relative_to(root):
                    continue  # refuse paths that climb out of the folder
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as dst:
                    dst.write(src.read())
        yield from _candidate_files(folder, scratch)
    elif path.is_file():
        yield path


def collect(paths: Iterable[Path], scratch: ExitStack, report: PushReport) -> list[Outgoing]:
    """The DICOM files among `paths` (recursively), read just far enough to know how to send them."""
    found: list[Outgoing] = []
    for root in paths:
        if not root.exists():
            report.skipped.append((root, "does not exist"))
            continue
        for path in _candidate_files(root, scratch):
            if path.name.upper() == "DICOMDIR":
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
                ts = ds.file_meta.TransferSyntaxUID
                sop_class = ds.file_meta.get("MediaStorageSOPClassUID") or ds.SOPClassUID
                sop_uid = ds.file_meta.get("MediaStorageSOPInstanceUID") or ds.SOPInstanceUID
            except (InvalidDicomError, AttributeError, KeyError, OSError, ValueError) as exc:
                report.skipped.append((path, f"not a DICOM file ({type(exc).__name__})"))
                continue
            found.append(Outgoing(path, str(sop_class), str(ts), str(sop_uid)))
    return found


def push(
    files: list[Outgoing],
    *,
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str,
    report: PushReport,
    progress: Callable[[int], None] = lambda n: None,
) -> PushReport:
    for f, sent in send_all(files, lambda f: f, calling_aet=calling_aet, called_aet=called_aet, host=host, port=port):
        if sent.status is None:
            report.failed.append((f.path, sent.error))
        elif is_success(sent.status):
            report.sent += 1
        else:
            report.failed.append((f.path, f"status 0x{sent.status:04X} {sent.error}".strip()))
        progress(1)
    return report
