"""What every DICOMweb route shares: errors answered as JSON problems with the status the standard
expects (401, 403, 404, 406, ...), the caller (the portal's bearer token or browser session, through
`signed_in`, so scoping and CSRF are the portal's), and scoped look-ups of a study, series or instance by
UID: anything the caller may not see is 404, audited, exactly as if it did not exist."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy import Row
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import PermissionDenied, Principal
from imex.db.models import Instance, Series, Study
from imex.render.cache import ByteLRU
from imex.render.renderer import Renderer
from imex.web.deps import db_session, portal, signed_in, visible_or_deny
from imex.web.dicomweb import dicomjson
from imex.web.errors import Problem, SignInRequired

PREFIX = "/dicomweb"


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


class DicomWebRoute(APIRoute):
    """Answers the portal's errors as JSON problems here (the portal would send people to its sign-in page)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                return problem(401, exc.detail, {"WWW-Authenticate": 'Bearer realm="imex"'})
            except scope.NotVisible as exc:
                return problem(404, str(exc))
            except PermissionDenied as exc:
                return problem(403, f"this needs the permission {exc.permission!r}")
            except Problem as exc:
                return problem(exc.status, exc.detail)
            except RequestValidationError as exc:
                return problem(400, "; ".join(str(e.get("msg", "invalid")) for e in exc.errors())[:1000])

        return answer


def viewer(request: Request, p: Principal = Depends(signed_in)) -> Principal:
    """The caller, who must be allowed to open studies."""
    if not (p.can("studies.view") or p.can("transfers.view")):
        raise PermissionDenied("studies.view")
    return p


def renderer(request: Request) -> Renderer:
    """One decoding and rendering cache per application."""
    found = getattr(request.app.state, "renderer", None)
    if found is None:
        found = request.app.state.renderer = Renderer(portal(request).hub.store)  # type: ignore[union-attr]
    return found


def metadata(request: Request, blob_key: str) -> dict[str, Any]:
    """A stored instance's DICOM JSON, cached by its content address."""
    cache = getattr(request.app.state, "dicomweb_metadata", None)
    if cache is None:
        cache = request.app.state.dicomweb_metadata = ByteLRU(64 * 1024 * 1024, lambda _v: 16 * 1024)
    return cache.get_or_make(blob_key, lambda: dicomjson.metadata(renderer(request).dataset(blob_key)))


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def study_row(s: Session, p: Principal, study_uid: str) -> Row:
    """(Study, Patient, SourceInstitution) of a visible study, else 404 (and the attempt audited)."""
    found = s.execute(scope.studies_query(p).where(Study.study_uid == study_uid)).first()
    return visible_or_deny(s, p, found, "study", study_uid)


def series_row(s: Session, p: Principal, study_uid: str, series_uid: str) -> Row:
    found = s.execute(
        scope.series_query(p).where(Study.study_uid == study_uid, Series.series_uid == series_uid)
    ).first()
    return visible_or_deny(s, p, found, "series", series_uid)


def instance_row(s: Session, p: Principal, study_uid: str, series_uid: str, sop_uid: str) -> Row:
    found = s.execute(
        scope.instances_query(p).where(
            Study.study_uid == study_uid, Series.series_uid == series_uid, Instance.sop_uid == sop_uid
        )
    ).first()
    return visible_or_deny(s, p, found, "instance", sop_uid)


Session_ = Depends(db_session)
