"""Storage accounting that the JSON API (web/api/storage.py) and the storage page both show: what the hub
holds for each institution and folder, against its quota."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Folder, Institution
from imex.store.quota import by_folder, by_institution


def storage(s: Session, p: Principal) -> dict[str, Any]:
    """Bytes and studies held per institution (`p`'s; all for system admins) and per folder `p` sees."""
    if not p.can("users.manage"):
        p.require("nodes.manage")
    conn = s.connection()
    held = by_institution(conn, None if p.is_system_admin else p.institution_id)
    names = dict(s.execute(select(Institution.id, Institution.ods_code)).all())
    visible = [
        f for f in s.scalars(select(Folder).where(Folder.id.in_(scope.visible_folder_ids(p))).order_by(Folder.name))
    ]
    folder_held = by_folder(conn, [f.id for f in visible])
    return {
        "institutions": [
            {
                "ods": names[i],
                "bytes": h.bytes,
                "studies": h.studies,
                "quota_bytes": h.quota_bytes,
                "used_percent": round(100 * h.bytes / h.quota_bytes, 1) if h.quota_bytes else None,
            }
            for i, h in sorted(held.items(), key=lambda item: names[item[0]])
        ],
        "folders": [
            {"name": f.name, "kind": f.kind, "bytes": folder_held[f.id].bytes, "studies": folder_held[f.id].studies}
            for f in visible
        ],
    }
