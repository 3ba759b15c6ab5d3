"""Two hospitals whose PACS are Orthanc instances, for the exchange tests: King's (RJZ) searches and sends
from its Orthanc through the hub; Imperial (RYJ) receives in its own. Users: a sender at each, a viewer
at RYJ, and a sender at a third institution (RXX) who must see nothing of theirs."""

from __future__ import annotations

import io
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import select

from hubtools import wait_until
from imex.db.models import Node
from imex.directory import add_institution, add_node
from imex.samples import make_study
from portaltools import add_user

PATIENT = "9434765919"
HUB_AET = "IMEX"


def pdf_bytes(text: str = "Referral letter") -> bytes:
    """A small, valid one-page PDF."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))
    return out.getvalue()


def scanner_script(folder: Path) -> str:
    """A virus-scanning command for `exchange.scan_command`: refuses input holding the EICAR marker."""
    script = folder / "scan.py"
    script.write_text(
        "import sys\ndata = sys.stdin.buffer.read()\n"
        "if b'EICAR-STANDARD-ANTIVIRUS-TEST-FILE' in data:\n"
        "    print('stream: Eicar-Test-Signature FOUND'); sys.exit(1)\n"
        "print('stream: OK')\n"
    )
    return f"{sys.executable} {script}"


@dataclass
class Site:
    pacs_a: Any
    pacs_b: Any
    node_a: int
    studies: list[list[Path]] = field(default_factory=list)


def register(db: Any, pacs_a: Any, pacs_b: Any) -> int:
    """Institutions, their PACS nodes (A may be searched and retrieved from; B receives); A's node id."""
    add_institution(db, "RJZ", "King's College Hospital")
    add_institution(db, "RYJ", "Imperial College Healthcare")
    add_institution(db, "RXX", "Elsewhere Hospital")
    add_node(db, "RJZ_PACS", pacs_a.aet, "127.0.0.1", pacs_a.dicom_port, "RJZ", destination=False, query_retrieve=True)
    add_node(db, "RYJ_PACS", pacs_b.aet, "127.0.0.1", pacs_b.dicom_port, "RYJ")
    with db.sessions() as s:
        return s.scalar(select(Node.id).where(Node.name == "RJZ_PACS"))


def add_people(hub: Any) -> None:
    add_user(hub, "alice", "RJZ", ["sender"], email="alice@rjz.example")
    add_user(hub, "bob", "RYJ", ["viewer"], email="bob@ryj.example")
    add_user(hub, "rita", "RYJ", ["sender"], email="rita@ryj.example")
    add_user(hub, "carol", "RXX", ["sender"], email="carol@rxx.example")


def make_studies(folder: Path) -> list[list[Path]]:
    """Two studies of the patient to send, and one of another patient that must stay put."""
    return [
        make_study(
            folder / "ct",
            series=2,
            instances_per_series=3,
            patient_id=PATIENT,
            patient_name="DOE^JANE",
            accession="ACC1",
            modality="CT",
            extra={"StudyDate": "20240105"},
        ),
        make_study(
            folder / "mr",
            series=1,
            instances_per_series=4,
            patient_id=PATIENT,
            patient_name="DOE^JANE",
            accession="ACC2",
            modality="MR",
            extra={"StudyDate": "20240210"},
        ),
        make_study(
            folder / "other",
            series=1,
            instances_per_series=2,
            patient_id="9434765870",
            patient_name="ROE^RICHARD",
            accession="ACC3",
            modality="CR",
        ),
    ]


def study_uid(paths: list[Path]) -> str:
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def sop_uids(paths: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def pixels_by_sop(paths: list[Path]) -> dict[str, int]:
    out = {}
    for p in paths:
        ds = dcmread(p)
        out[str(ds.SOPInstanceUID)] = zlib.crc32(ds.PixelData)
    return out


def received_pixels(pacs: Any) -> dict[str, int]:
    """SOP Instance UID -> CRC of the pixel data of every instance the Orthanc holds."""
    out = {}
    for instance in pacs.instances():
        ds = dcmread(io.BytesIO(pacs.get_file(instance)))
        out[str(ds.SOPInstanceUID)] = zlib.crc32(ds.PixelData)
    return out


def wait_state(client: Any, tid: int, state: str, timeout: float = 90) -> dict:
    def check() -> Any:
        body = client.get(f"/api/v1/transactions/{tid}/progress").json()
        return body if body["state"] == state else None

    return wait_until(check, timeout=timeout, interval=0.5, message=f"exchange {tid} {state}")
