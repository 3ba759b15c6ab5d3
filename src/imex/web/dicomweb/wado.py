"""WADO-RS (PS3.18 10.4): instances of a study, series or one instance as multipart/related
application/dicom; metadata as DICOM JSON; frames (native, or as stored when compressed); rendered
frames (JPEG or PNG, with window, viewport and quality) and thumbnails. Scoped like the portal: a UID
the caller may not see is 404."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from io import BytesIO

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy import Select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Instance, Series, Study
from imex.render import decode, image
from imex.render.renderer import Options
from imex.web.dicomweb import multipart
from imex.web.dicomweb.common import (
    DicomWebRoute,
    Session_,
    instance_row,
    metadata,
    renderer,
    series_row,
    study_row,
    viewer,
)
from imex.web.errors import Problem

router = APIRouter(prefix="/dicomweb", route_class=DicomWebRoute, include_in_schema=False)

DICOM = multipart.Choice(True, "application/dicom", None)
OCTETS = multipart.Choice(True, "application/octet-stream", None)
# the media type of a compressed frame, by transfer syntax (PS3.18 8.7.3.3.2)
FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


# -- instances ---------------------------------------------------------------------------------------------


def _as_explicit_little(request: Request, inst: Instance) -> bytes:
    """The instance in Explicit VR Little Endian, decompressed when stored compressed."""
    ds = copy.deepcopy(renderer(request).dataset(inst.blob_key))
    if UID(inst.transfer_syntax_uid).is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def _instance_syntax(request: Request, stored: str) -> str:
    """The transfer syntax to answer with: as stored, or Explicit VR Little Endian; else 406."""
    for choice in multipart.accepted(request.headers.get("accept"), DICOM):
        if choice.media_type not in ("application/dicom", "*/*"):
            continue
        wanted = choice.transfer_syntax or ExplicitVRLittleEndian
        if wanted in ("*", stored):
            return stored
        if wanted == ExplicitVRLittleEndian:
            return wanted
    raise Problem(
        406,
        "this hub answers instances as application/dicom, as stored (transfer-syntax=*) or in "
        f"Explicit VR Little Endian ({ExplicitVRLittleEndian})",
    )


def _instances_answer(request: Request, s: Session, stmt: Select) -> Response:
    rows = [row[-1] for row in s.execute(stmt.order_by(Series.number, Series.id, Instance.number, Instance.id))]
    if not rows:
        raise scope.NotVisible("no instances")
    syntaxes = {inst.id: _instance_syntax(request, inst.transfer_syntax_uid) for inst in rows}
    store = renderer(request).store
    bound = multipart.boundary()

    def parts() -> Iterator[tuple[str, bytes]]:
        for inst in rows:
            syntax = syntaxes[inst.id]
            data = (
                store.read(inst.blob_key) if syntax == inst.transfer_syntax_uid else _as_explicit_little(request, inst)
            )
            yield f"application/dicom; transfer-syntax={syntax}", data

    single = {*syntaxes.values()}
    return StreamingResponse(
        multipart.stream(parts(), bound),
        media_type=multipart.content_type("application/dicom", bound, single.pop() if len(single) == 1 else None),
    )


@router.get("/studies/{study_uid}")
def retrieve_study(study_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_) -> Response:
    study_row(s, p, study_uid)
    return _instances_answer(request, s, scope.instances_query(p).where(Study.study_uid == study_uid))


@router.get("/studies/{study_uid}/series/{series_uid}")
def retrieve_series(
    study_uid: str, series_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    series_row(s, p, study_uid, series_uid)
    return _instances_answer(
        request, s, scope.instances_query(p).where(Study.study_uid == study_uid, Series.series_uid == series_uid)
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
def retrieve_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    p: Principal = Depends(viewer),
    s: Session = Session_,
) -> Response:
    instance_row(s, p, study_uid, series_uid, sop_uid)
    return _instances_answer(
        request,
        s,
        scope.instances_query(p).where(
            Study.study_uid == study_uid, Series.series_uid == series_uid, Instance.sop_uid == sop_uid
        ),
    )


# -- metadata ----------------------------------------------------------------------------------------------


def _metadata_answer(request: Request, s: Session, stmt: Select) -> Response:
    rows = [row[-1] for row in s.execute(stmt.order_by(Series.number, Series.id, Instance.number, Instance.id))]
    return JSONResponse([metadata(request, inst.blob_key) for inst in rows], media_type="application/dicom+json")


@router.get("/studies/{study_uid}/metadata")
def study_metadata(study_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_) -> Response:
    study_row(s, p, study_uid)
    return _metadata_answer(request, s, scope.instances_query(p).where(Study.study_uid == study_uid))


@router.get("/studies/{study_uid}/series/{series_uid}/metadata")
def series_metadata(
    study_uid: str, series_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    series_row(s, p, study_uid, series_uid)
    return _metadata_answer(
        request, s, scope.instances_query(p).where(Study.study_uid == study_uid, Series.series_uid == series_uid)
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata")
def instance_metadata(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    p: Principal = Depends(viewer),
    s: Session = Session_,
) -> Response:
    inst = instance_row(s, p, study_uid, series_uid, sop_uid)[-1]
    return JSONResponse([metadata(request, inst.blob_key)], media_type="application/dicom+json")


# -- frames ------------------------------------------------------------------------------------------------


def frame_numbers(text: str, count: int) -> list[int]:
    """ "1,3,5" as 0-based indices; 404 for a frame the instance does not have, 400 for nonsense."""
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise Problem(400, f"{text[:40]!r} is not a list of frame numbers") from None
    if not numbers or len(numbers) > 10_000:
        raise Problem(400, "name between 1 and 10000 frames")
    for n in numbers:
        if not 1 <= n <= count:
            raise Problem(404, f"frame {n} does not exist (the instance has {count})")
    return [n - 1 for n in numbers]


def native_frame(ds, index: int) -> bytes:
    """A frame's pixel values as uncompressed little-endian bytes (PS3.18 8.7.3.3.1)."""
    if (
        not UID(ds.file_meta.TransferSyntaxUID).is_compressed
        and ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"
    ):
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        return bytes(ds.PixelData[index * size : (index + 1) * size])
    raw = pixel_array(ds, index=index if decode.frame_count(ds) > 1 else None, raw=True)
    return raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frames}")
def retrieve_frames(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frames: str,
    request: Request,
    p: Principal = Depends(viewer),
    s: Session = Session_,
) -> Response:
    inst = instance_row(s, p, study_uid, series_uid, sop_uid)[-1]
    ds = renderer(request).dataset(inst.blob_key)
    if not decode.has_pixels(ds):
        raise Problem(404, "the instance has no pixel data")
    count = decode.frame_count(ds)
    indices = frame_numbers(frames, count)
    stored = str(ds.file_meta.TransferSyntaxUID)
    as_stored = FRAME_TYPES.get(stored)
    for choice in multipart.accepted(request.headers.get("accept"), OCTETS):
        if choice.media_type == "application/octet-stream" or (choice.media_type == "*/*" and not as_stored):
            bodies = [
                ("application/octet-stream; transfer-syntax=" + ExplicitVRLittleEndian, native_frame(ds, i))
                for i in indices
            ]
            break
        if as_stored and choice.media_type in (as_stored, "*/*") and choice.transfer_syntax in (None, "*", stored):
            bodies = [
                (f"{as_stored}; transfer-syntax={stored}", get_frame(ds.PixelData, i, number_of_frames=count))
                for i in indices
            ]
            break
    else:
        raise Problem(
            406,
            "frames are answered as application/octet-stream (uncompressed)"
            + (f" or {as_stored} (as stored)" if as_stored else ""),
        )
    bound = multipart.boundary()
    return Response(
        b"".join(multipart.stream(bodies, bound)), media_type=multipart.content_type(bodies[0][0].split(";")[0], bound)
    )


# -- rendered and thumbnails -------------------------------------------------------------------------------


def render_options(request: Request, thumbnail: bool = False) -> Options:
    """window=center,width[,function], viewport=vw,vh[,sx,sy,sw,sh], quality=1..100, Accept or accept=."""
    q = request.query_params
    wanted = (q.get("accept") or request.headers.get("accept") or "image/jpeg").lower()
    media = "image/png" if "image/png" in wanted else "image/jpeg"
    if "image/png" not in wanted and "image/jpeg" not in wanted and "image/*" not in wanted and "*/*" not in wanted:
        raise Problem(406, "rendered images are image/jpeg or image/png")
    window = None
    try:
        if q.get("window"):
            parts = [x.strip() for x in q["window"].split(",")]
            function = (parts[2] if len(parts) > 2 else "linear").lower().replace("-", "_")
            if function not in image.FUNCTIONS or len(parts) not in (2, 3):
                raise ValueError
            window = image.Window(float(parts[0]), float(parts[1]), function)
            if window.width <= 0 or (function == "linear" and window.width < 1):
                raise ValueError
        viewport = image.Viewport(128, 128) if thumbnail else None
        if q.get("viewport"):
            v = [int(float(x)) for x in q["viewport"].split(",")]
            if len(v) not in (2, 6) or v[0] < 1 or v[1] < 1 or v[0] > 8192 or v[1] > 8192:
                raise ValueError
            viewport = image.Viewport(v[0], v[1], tuple(v[2:]) if len(v) == 6 else None)  # type: ignore[arg-type]
        quality = int(q.get("quality", 90))
        if not 1 <= quality <= 100:
            raise ValueError
    except ValueError:
        raise Problem(
            400,
            "window is center,width[,linear|linear-exact|sigmoid] (width > 0), viewport is "
            "vw,vh[,sx,sy,sw,sh], quality is 1 to 100",
        ) from None
    return Options(window=window, viewport=viewport, media_type=media, quality=quality)


def _rendered(request: Request, inst: Instance, index: int, options: Options) -> Response:
    r = renderer(request)
    ds = r.dataset(inst.blob_key)
    if not decode.has_pixels(ds):
        raise Problem(404, "the instance has no pixel data to render")
    count = decode.frame_count(ds)
    if not 0 <= index < count:
        raise Problem(404, f"frame {index + 1} does not exist (the instance has {count})")
    return Response(r.render(inst.blob_key, index, options), media_type=options.media_type)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered")
def rendered_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    p: Principal = Depends(viewer),
    s: Session = Session_,
) -> Response:
    inst = instance_row(s, p, study_uid, series_uid, sop_uid)[-1]
    return _rendered(request, inst, 0, render_options(request))


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered")
def rendered_frame(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: str,
    request: Request,
    p: Principal = Depends(viewer),
    s: Session = Session_,
) -> Response:
    inst = instance_row(s, p, study_uid, series_uid, sop_uid)[-1]
    if not frame.isdigit() or not 1 <= int(frame) <= 100_000:
        raise Problem(400, "rendered frames are asked for one at a time, by number")
    return _rendered(request, inst, int(frame) - 1, render_options(request))


def _middle(s: Session, stmt: Select) -> Instance:
    rows = [row[-1] for row in s.execute(stmt.order_by(Series.number, Series.id, Instance.number, Instance.id))]
    if not rows:
        raise scope.NotVisible("no instances")
    return rows[len(rows) // 2]


@router.get("/studies/{study_uid}/thumbnail")
def study_thumbnail(
    study_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    study_row(s, p, study_uid)
    first_series = s.execute(
        scope.series_query(p).where(Study.study_uid == study_uid).order_by(Series.number, Series.id)
    ).first()
    if first_series is None:
        raise scope.NotVisible("no series")
    inst = _middle(s, scope.instances_query(p).where(Series.id == first_series[-1].id))
    return _rendered(request, inst, 0, render_options(request, thumbnail=True))


@router.get("/studies/{study_uid}/series/{series_uid}/thumbnail")
def series_thumbnail(
    study_uid: str, series_uid: str, request: Request, p: Principal = Depends(viewer), s: Session = Session_
) -> Response:
    series_row(s, p, study_uid, series_uid)
    inst = _middle(s, scope.instances_query(p).where(Study.study_uid == study_uid, Series.series_uid == series_uid))
    return _rendered(request, inst, 0, render_options(request, thumbnail=True))


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail")
def instance_thumbnail(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    p: Principal = Depends(viewer),
    s: Session = Session_,
) -> Response:
    inst = instance_row(s, p, study_uid, series_uid, sop_uid)[-1]
    return _rendered(request, inst, 0, render_options(request, thumbnail=True))
