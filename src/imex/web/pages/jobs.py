"""The queues page (mirrors web/api/jobs.py): every durable queue at a glance, and the jobs each gave up."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from imex.auth.permissions import Principal
from imex.jobs import operate
from imex.web.context import Portal
from imex.web.deps import portal, signed_in
from imex.web.pages.render import render

router = APIRouter(include_in_schema=False)


@router.get("/admin/jobs")
def jobs_page(request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> HTMLResponse:
    p.require("system.admin")
    queues = operate.overview(pt.db)
    dead = {q.name: operate.dead_jobs(pt.db, q.name, limit=20) for q in queues if q.dead}
    return render(request, "admin_jobs.html", queues=queues, dead=dead)
