"""Rendering a page: the templates, the context every page gets (who is signed in, the CSRF token, unread
notifications, retention warnings), and the error page the error handlers (web/errors.py) are given."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from imex import __version__
from imex.auth import accounts
from imex.auth.permissions import Principal
from imex.notify import wording
from imex.web import views
from imex.web.context import Portal

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))
# what the pages show instead of header codes (imex.notify.wording, shared with e-mails and notifications)
TEMPLATES.env.filters.update(
    person=wording.person,
    sex=wording.sex,
    human_date=wording.human_date,
    count=wording.count,
    action=views.action_label,
)


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    pt: Portal = request.app.state.portal
    unread = 0
    if principal is not None:
        with pt.db.reader() as conn:  # the route's own session may hold SQLite's write lock
            unread = views.unread_count(conn, principal.user_id)
    base = {
        "request": request,
        "me": principal,
        "csrf": getattr(request.state, "csrf", ""),
        "version": __version__,
        "refresh": pt.config["http.worklist_refresh_seconds"],
        "unread": unread,
        "demo": getattr(pt.hub, "demo", None) is not None,  # `imex serve --demo`: its mail page is in the menu
        # studies expiring before this (ISO, compared as text with the rows' expires_at) are flagged
        "warn_hours": pt.config["retention.warn_hours"],
        "warn_before": views.iso(accounts.utcnow() + dt.timedelta(hours=pt.config["retention.warn_hours"])),
    }
    return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)


def render_error(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", status=status, title=title, detail=detail)
