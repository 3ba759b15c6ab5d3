"""The pages and reads of an outside recipient's link (the other side of web/api/links.py, which makes
and revokes links).

/l/{token} opens the link and, on request, sends a one-time code to its e-mail address; the right code
opens a link session (its own HttpOnly, SameSite=Strict cookie on /link, with a short idle expiry). Under
/link that session sees ONE study: the 2D viewer (the same viewer.js, reading the link-scoped DICOMweb
subset below instead of /dicomweb) and, for view-and-download links, the zip. Any other study's, series'
or instance's UID is 404, audited. An expired, revoked or locked link shows a page saying so."""

from __future__ import annotations

import datetime as dt
import hmac
import secrets

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.db.models import Instance, Institution, Patient, Series, Study, StudyLink
from imex.export import study_members
from imex.links import access
from imex.links.manage import state
from imex.render import decode
from imex.web.context import Portal
from imex.web.deps import check_same_origin, client_ip, db_session, portal
from imex.web.dicomweb import dicomjson
from imex.web.dicomweb.common import DicomWebRoute, metadata, renderer
from imex.web.dicomweb.wado import render_options
from imex.web.errors import Problem
from imex.web.pages.render import render
from imex.web.views.download import zip_response

router = APIRouter(include_in_schema=False)
reads = APIRouter(prefix="/link/dicomweb", route_class=DicomWebRoute, include_in_schema=False)

SESSION_COOKIE = "imex_link"
FORM_COOKIE = "imex_link_form"
GONE = {
    "expired": "This link has expired.",
    "revoked": "This link has been withdrawn by the people who shared it.",
    "locked": "This link is locked because a wrong code was entered too many times.",
}


def _idle(pt: Portal) -> dt.timedelta:
    return dt.timedelta(minutes=int(pt.config["links.session_idle_minutes"]))


def _gone(request: Request, s: Session, link: StudyLink | None, status: str) -> HTMLResponse:
    """The page for a link that cannot be used (unknown, expired, revoked or locked), audited."""
    if link is not None:
        access.record(s, "link.open", link, outcome="failure", ip=client_ip(request), detail=f"link is {status}")
        s.commit()
    message = GONE.get(status, "This link is not valid. Check that you copied the whole address.")
    return render(request, "link_gone.html", status=404 if link is None else 410, message=message, state=status)


def _form_page(
    request: Request, link: StudyLink, token: str, *, sent: bool = False, error: str = "", status: int = 200
) -> HTMLResponse:
    """The code page, with a fresh double-submit token for its forms."""
    form_token = secrets.token_urlsafe(24)
    name, _, domain = link.email.partition("@")
    response = render(
        request,
        "link_open.html",
        status=status,
        token=token,
        sent=sent,
        error=error,
        form_token=form_token,
        masked=f"{name[:1]}***@{domain}",
        mode=link.mode,
    )
    response.set_cookie(
        FORM_COOKIE,
        form_token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/l",
        max_age=3600,
    )
    return response


def _check_form(request: Request, submitted: str) -> None:
    check_same_origin(request)
    expected = request.cookies.get(FORM_COOKIE, "")
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise Problem(
            403, "The form's security token is missing or out of date; open the link again.", title="CSRF check failed"
        )


def _usable(request: Request, s: Session, token: str) -> tuple[StudyLink | None, Response | None]:
    link = access.find(s, token)
    if link is None:
        return None, _gone(request, s, None, "unknown")
    status = state(link)
    if status != "active":
        return None, _gone(request, s, link, status)
    return link, None


@router.get("/l/{token}")
def open_link(token: str, request: Request, s: Session = Depends(db_session)) -> Response:
    link, gone = _usable(request, s, token)
    if gone is not None:
        return gone
    assert link is not None
    access.record(s, "link.open", link, ip=client_ip(request), detail="link opened")
    s.commit()
    return _form_page(request, link, token)


@router.post("/l/{token}/code")
def ask_code(
    token: str,
    request: Request,
    csrf_token: str = Form("", max_length=100),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    _check_form(request, csrf_token)
    link, gone = _usable(request, s, token)
    if gone is not None:
        return gone
    assert link is not None
    try:
        access.send_code(s, link, pt.config, ip=client_ip(request))
    except access.TooManyCodes:
        s.commit()
        return _form_page(
            request,
            link,
            token,
            sent=True,
            status=429,
            error="Too many codes were asked for this link in the last hour. Use the last code "
            "you received, or try again later.",
        )
    s.commit()
    return _form_page(request, link, token, sent=True)


@router.post("/l/{token}/session")
def enter_code(
    token: str,
    request: Request,
    code: str = Form(..., max_length=20),
    csrf_token: str = Form("", max_length=100),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    _check_form(request, csrf_token)
    link, gone = _usable(request, s, token)
    if gone is not None:
        return gone
    assert link is not None
    ip = client_ip(request)
    if not access.check_code(s, link, code, pt.config, ip=ip):
        s.commit()
        if link.locked_at is not None:
            return _gone(request, s, link, "locked")
        left = int(pt.config["links.max_wrong_codes"]) - link.failed_codes
        return _form_page(
            request,
            link,
            token,
            sent=True,
            status=400,
            error=f"That code is wrong or has expired. {left} more tries before the link locks.",
        )
    cookie = access.open_session(s, link, ip=ip)
    s.commit()
    response = RedirectResponse("/link/study", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, cookie, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/link"
    )
    return response


# -- inside a link session: one study -------------------------------------------------------------------------


def _link_session(request: Request, s: Session, pt: Portal) -> StudyLink | None:
    found = access.resolve(s, request.cookies.get(SESSION_COOKIE, ""), _idle(pt))
    return None if found is None else found[1]


def _ended(request: Request) -> HTMLResponse:
    return render(
        request,
        "link_gone.html",
        status=401,
        state="ended",
        message="Your session on this link has ended. Open the link from your e-mail again and ask for a new code.",
    )


@router.get("/link/study")
def link_study(request: Request, pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> Response:
    link = _link_session(request, s, pt)
    if link is None:
        return _ended(request)
    study, patient = s.execute(
        select(Study, Patient).join(Patient, Patient.id == Study.patient_pk).where(Study.id == link.study_id)
    ).one()
    source = s.get(Institution, study.institution_id)
    access.record(s, "link.view", link, ip=client_ip(request), detail="opened the study in the viewer")
    s.commit()
    return render(request, "link_study.html", study=study, patient=patient, source=source, link=link)


@router.get("/link/download")
def link_download(request: Request, pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> Response:
    link = _link_session(request, s, pt)
    if link is None:
        return _ended(request)
    if link.mode != "download":
        access.record(s, "link.download", link, outcome="denied", ip=client_ip(request), detail="view-only link")
        s.commit()
        return render(
            request,
            "link_gone.html",
            status=403,
            state="view-only",
            message="This link lets you view the images, not download them.",
        )
    members = study_members(s, pt.hub.store, link.study_id)  # type: ignore[union-attr]
    response = zip_response(members, "imex-images.zip")
    access.record(
        s, "link.download", link, ip=client_ip(request), detail=f"zip with DICOMDIR, {len(members)} instances"
    )
    s.commit()
    return response


# -- the viewer's reads, scoped to the link's study ------------------------------------------------------------


def _reader(request: Request, s: Session, pt: Portal, study_uid: str) -> StudyLink:
    """The link of the session, when `study_uid` is its study; otherwise 401 (no session) or 404, audited."""
    link = _link_session(request, s, pt)
    if link is None:
        raise Problem(401, "no open link session; open the link and enter the code again")
    own = s.scalar(select(Study.study_uid).where(Study.id == link.study_id))
    if study_uid != own:
        access.record(
            s,
            "link.access_denied",
            link,
            outcome="denied",
            ip=client_ip(request),
            detail=f"study {study_uid[:64]} is not the link's",
        )
        raise scope.NotVisible(f"no study {study_uid[:64]}")
    return link


def _series(s: Session, link: StudyLink, series_uid: str, request: Request) -> Series:
    found = s.scalar(select(Series).where(Series.study_id == link.study_id, Series.series_uid == series_uid))
    if found is None:
        access.record(
            s,
            "link.access_denied",
            link,
            outcome="denied",
            ip=client_ip(request),
            detail=f"series {series_uid[:64]} is not in the link's study",
        )
        raise scope.NotVisible(f"no series {series_uid[:64]}")
    return found


def _instances(s: Session, series: Series) -> list[Instance]:
    return list(
        s.scalars(select(Instance).where(Instance.series_id == series.id).order_by(Instance.number, Instance.id))
    )


@reads.get("/studies/{study_uid}/series")
def link_series(
    study_uid: str, request: Request, pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> Response:
    link = _reader(request, s, pt, study_uid)
    rows = s.scalars(select(Series).where(Series.study_id == link.study_id).order_by(Series.number, Series.id))
    items = [
        dicomjson.answer(dicomjson.series_attributes(x), f"/link/dicomweb/studies/{study_uid}/series/{x.series_uid}")
        for x in rows
    ]
    s.commit()
    return JSONResponse(items, media_type="application/dicom+json")


@reads.get("/studies/{study_uid}/series/{series_uid}/metadata")
def link_metadata(
    study_uid: str, series_uid: str, request: Request, pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> Response:
    link = _reader(request, s, pt, study_uid)
    keys = [inst.blob_key for inst in _instances(s, _series(s, link, series_uid, request))]
    s.commit()
    return JSONResponse([metadata(request, key) for key in keys], media_type="application/dicom+json")


def _render(request: Request, blob_key: str, index: int, thumbnail: bool = False) -> Response:
    options = render_options(request, thumbnail=thumbnail)
    r = renderer(request)
    ds = r.dataset(blob_key)
    if not decode.has_pixels(ds):
        raise Problem(404, "the instance has no pixel data to render")
    count = decode.frame_count(ds)
    if not 0 <= index < count:
        raise Problem(404, f"frame {index + 1} does not exist (the instance has {count})")
    return Response(r.render(blob_key, index, options), media_type=options.media_type)


@reads.get("/studies/{study_uid}/series/{series_uid}/thumbnail")
def link_thumbnail(
    study_uid: str, series_uid: str, request: Request, pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> Response:
    link = _reader(request, s, pt, study_uid)
    instances = _instances(s, _series(s, link, series_uid, request))
    s.commit()
    if not instances:
        raise scope.NotVisible("no instances")
    return _render(request, instances[len(instances) // 2].blob_key, 0, thumbnail=True)


@reads.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered")
def link_frame(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: str,
    request: Request,
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    link = _reader(request, s, pt, study_uid)
    series = _series(s, link, series_uid, request)
    inst = s.scalar(select(Instance).where(Instance.series_id == series.id, Instance.sop_uid == sop_uid))
    if inst is None:
        access.record(
            s,
            "link.access_denied",
            link,
            outcome="denied",
            ip=client_ip(request),
            detail=f"instance {sop_uid[:64]} is not in the link's study",
        )
        raise scope.NotVisible(f"no instance {sop_uid[:64]}")
    s.commit()
    if not frame.isdigit() or not 1 <= int(frame) <= 100_000:
        raise Problem(400, "rendered frames are asked for one at a time, by number")
    return _render(request, inst.blob_key, int(frame) - 1)


router.include_router(reads)
