"""A study's file-set as a zip download, shared by the download API (web/api/download.py) and an outside
recipient's link (web/pages/links.py)."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from imex.export import build_dicomdir, stream_zip
from imex.export.dicomdir import Member
from imex.web.errors import Problem


def zip_response(members: list[Member], filename: str) -> StreamingResponse:
    """The file-set as a streamed zip download (the DICOMDIR is made first, so a failure is an error)."""
    if not members:
        raise Problem(404, "this study has no stored instances to download")
    try:
        plan = build_dicomdir(members)
    except (ValueError, OSError) as exc:  # e.g. an instance of a class no DICOMDIR record fits
        raise Problem(409, f"this study cannot be written as a DICOM file-set: {exc}"[:500]) from exc
    return StreamingResponse(
        stream_zip(members, plan),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
