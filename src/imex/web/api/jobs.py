"""The hub's durable queues for its operators (system administrators only: the queues hold every
institution's work): how each stands, the jobs it gave up, and their retry. Mirrors `imex jobs`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.jobs import operate
from imex.web.context import Portal
from imex.web.deps import db_session, portal, signed_in

router = APIRouter(prefix="/api/v1", tags=["operations"])


@router.get("/jobs", summary="Every durable queue: due, running, retrying, dead, oldest due (system admins)")
def get_jobs(p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> list[dict[str, Any]]:
    p.require("system.admin")
    return [s.as_dict() for s in operate.overview(pt.db)]


@router.get("/jobs/{queue}/dead", summary="The newest jobs a queue gave up, with their last error")
def get_dead(queue: str, p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> list[dict[str, Any]]:
    p.require("system.admin")
    return [job.as_dict() for job in operate.dead_jobs(pt.db, queue)]


@router.post("/jobs/{queue}/{job_id}/retry", summary="Retry one dead job now, attempts from zero")
def retry_job(
    queue: str,
    job_id: int,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("system.admin")
    operate.retry(pt.db, queue, job_id)
    audit.record(
        s.connection(),
        "jobs.retry",
        object_type=queue,
        object_id=job_id,
        detail=f"{queue} job {job_id} retried",
        **p.audit_fields(),
    )
    return {"queue": queue, "id": job_id, "retried": True}


@router.post("/jobs/{queue}/retry-dead", summary="Retry every dead job of a queue")
def retry_all(
    queue: str, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("system.admin")
    count = operate.retry_all(pt.db, queue)
    audit.record(
        s.connection(),
        "jobs.retry",
        object_type=queue,
        detail=f"{count} dead {queue} job(s) retried",
        **p.audit_fields(),
    )
    return {"queue": queue, "retried": count}
