"""What the uploads API (web/api/uploads.py) and the Upload page (web/pages/uploads.py) share: an upload
the caller may see. Each upload is its creator's and their institution admins'; any other id is 404,
audited."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Upload
from imex.web.deps import visible_or_deny


def visible_upload(s: Session, p: Principal, upload_id: int) -> Upload:
    """The upload when `p` may see it; otherwise 404, audited."""
    p.require("studies.send")
    found = visible_or_deny(
        s, p, s.scalar(select(Upload).where(Upload.id == upload_id, scope.upload_clause(p))), "upload", upload_id
    )
    s.commit()  # end the read: on SQLite it holds the write lock the staging and sending steps need
    return found
