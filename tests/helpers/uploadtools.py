"""Upload test helpers: a hub with King's (RJZ, the uploader) and Imperial (RYJ, whose PACS is a storescp),
sending files through the chunked upload API, and what the hub holds afterwards."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from imex.db.models import AuditEvent, Instance
from imex.dicom.part10 import dataset_offset


def put_file(client: httpx.Client, upload_id: int, path: str, data: bytes, chunk: int = 1 << 20) -> httpx.Response:
    """Send one file in chunks; returns the last answer (or the first refusal)."""
    offset = 0
    while True:
        part = data[offset : offset + chunk]
        answer = client.put(
            f"/api/v1/uploads/{upload_id}/files",
            params={"path": path, "size": len(data), "offset": offset},
            content=part,
            headers={"Content-Type": "application/octet-stream"},
        )
        offset += len(part)
        if answer.status_code != 200 or offset >= len(data):
            return answer


def new_upload(client: httpx.Client) -> int:
    answer = client.post("/api/v1/uploads")
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def upload_folder(client: httpx.Client, folder: Path, prefix: str = "") -> int:
    upload_id = new_upload(client)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        answer = put_file(client, upload_id, prefix + f.relative_to(folder).as_posix(), f.read_bytes())
        assert answer.status_code == 200, answer.text
    return upload_id


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def held(hub: Any) -> tuple[int, list[Path]]:
    """Instances in the index and blob files in the store."""
    with hub.db.sessions() as s:
        count = s.scalar(select(func.count()).select_from(Instance))
    return count, [p for p in hub.store.root.glob("???/*") if p.is_file()]


def audit_actions(hub: Any, **where: Any) -> list[tuple[str, str]]:
    with hub.db.sessions() as s:
        query = select(AuditEvent.action, AuditEvent.outcome).order_by(AuditEvent.id)
        for key, value in where.items():
            query = query.where(getattr(AuditEvent, key) == value)
        return [tuple(r) for r in s.execute(query)]
