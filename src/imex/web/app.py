"""The HTTP application: the portal's pages, the JSON API under /api/v1 (OpenAPI at
/api/v1/openapi.json), static files, GET /healthz and GET /metrics (Prometheus text format); with the
security headers and the request size limit every response and request goes through."""

from __future__ import annotations

import hmac
import ipaddress
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import generate_latest
from sqlalchemy import func, select, text

from imex import __version__, metrics
from imex.db.models import Study, Transfer
from imex.jobs import registry
from imex.jobs import stats as job_stats
from imex.web import dicomweb, errors, fhir, scim
from imex.web.api import (
    account,
    admin,
    audit_trail,
    destinations,
    download,
    folders,
    jobs,
    links,
    locator,
    pacs_search,
    priority,
    requests,
    storage,
    transactions,
    transfers,
    uploads,
)
from imex.web.context import Hub, Portal
from imex.web.guard import BodyLimit, ErrorsAnswered, SecurityHeaders, SignedInFirst
from imex.web.pages import account as account_pages
from imex.web.pages import admin as admin_pages
from imex.web.pages import audit_trail as audit_trail_pages
from imex.web.pages import certificate_signin as certificate_signin_pages
from imex.web.pages import destinations as destination_pages
from imex.web.pages import folders as folder_pages
from imex.web.pages import jobs as job_pages
from imex.web.pages import links as link_pages
from imex.web.pages import locator as locator_pages
from imex.web.pages import pacs_search as pacs_search_pages
from imex.web.pages import requests as request_pages
from imex.web.pages import sso as sso_pages
from imex.web.pages import storage as storage_pages
from imex.web.pages import transactions as transaction_pages
from imex.web.pages import transfers as transfer_pages
from imex.web.pages import uploads as upload_pages
from imex.web.pages.render import render_error

if TYPE_CHECKING:
    from starlette.types import ASGIApp

_STATES = ("pending", "sending", "delivered", "confirmed", "failed", "cancelled")

# The JSON API under /api/v1, one module per resource; the pages mirror it one to one (web/pages/).
API_MODULES = (
    transfers,
    priority,
    admin,
    account,
    audit_trail,
    folders,
    storage,
    destinations,
    download,
    links,
    locator,
    uploads,
    requests,
    transactions,
    pacs_search,
    jobs,
)
# Order matters where paths overlap: /exchanges/send (pacs_search) before /exchanges/{transaction_id}.
PAGE_MODULES = (
    account_pages,
    certificate_signin_pages,
    sso_pages,  # single sign-on through [[oidc]] providers: /login/sso/{name} and its callback
    transfer_pages,
    admin_pages,
    audit_trail_pages,
    folder_pages,
    storage_pages,
    destination_pages,
    link_pages,
    locator_pages,
    upload_pages,
    request_pages,
    pacs_search_pages,
    transaction_pages,
    job_pages,
)


def _gauges(hub: Hub) -> str:
    """Queue depths from the database, shared by every process, at scrape time (every durable queue's
    figures as imex_jobs*)."""
    with hub.db.reader() as conn:
        by_state = dict(conn.execute(select(Transfer.state, func.count()).group_by(Transfer.state)).all())
        quarantined = conn.execute(
            select(func.count()).select_from(Study).where(Study.route_state == "quarantined")
        ).scalar_one()
        waiting = conn.execute(
            select(func.count()).select_from(Study).where(Study.route_state == "receiving")
        ).scalar_one()
        queues = job_stats.prometheus_text(conn, registry.queues())
        conn.rollback()
    lines = ["# HELP imex_transfers Transfers in the queue by state.", "# TYPE imex_transfers gauge"]
    lines += [f'imex_transfers{{state="{s}"}} {by_state.get(s, 0)}' for s in _STATES]
    lines += [
        "# HELP imex_studies_quarantined Studies waiting in quarantine for a destination.",
        "# TYPE imex_studies_quarantined gauge",
        f"imex_studies_quarantined {quarantined}",
        "# HELP imex_studies_receiving Studies still receiving (not yet stable).",
        "# TYPE imex_studies_receiving gauge",
        f"imex_studies_receiving {waiting}",
    ]
    return "\n".join(lines) + "\n" + queues


class ImexApp(FastAPI):
    """FastAPI with the security headers outside everything, so that the error pages of the outermost
    error handler (500) carry them too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(ErrorsAnswered(super().build_middleware_stack()))


def _store_refusal(hub: Hub) -> str:
    """Why the store refuses arrivals now ("" when it does not): it is missing, or its disk has less free
    space than store.min_free_bytes (DICOM arrivals are then answered A700)."""
    if not hub.store.root.is_dir():
        return "missing"
    floor = hub.config["store.min_free_bytes"]
    if floor > 0:
        free = shutil.disk_usage(hub.store.root).free
        if free < floor:
            return f"full: {free} bytes free, below store.min_free_bytes ({floor}); arrivals are refused"
    return ""


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metrics_refusal(request: Request, token: str) -> Response | None:
    """None when the caller may read /metrics: the bearer token of http.metrics_token when it is set,
    otherwise a caller on the hub's own machine."""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return PlainTextResponse(
            "/metrics needs its bearer token (http.metrics_token)\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="imex metrics"'},
        )
    if _loopback(request.client.host if request.client else ""):
        return None
    return PlainTextResponse(
        "/metrics answers only this machine; set http.metrics_token to scrape it from elsewhere\n", status_code=403
    )


def create_app(hub: Hub) -> FastAPI:
    app = ImexApp(
        title="imex",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
        description="The imex hub's JSON API: everything the portal's pages do. Sign in with a "
        "bearer token from POST /api/v1/auth/token, or a portal session cookie plus "
        "its X-CSRF-Token header on changes.",
    )
    app.state.portal = Portal.create(hub.db, hub.config, hub)
    errors.install(app, render_error)
    # the last added runs first: the declared size is checked, then who is calling, before any body is read
    app.add_middleware(SignedInFirst)
    app.add_middleware(
        BodyLimit,
        max_bytes=hub.config["http.max_body_bytes"],
        uploads={
            prefix: hub.config["http.max_upload_bytes"]
            for prefix in ("/dicomweb/studies", "/api/v1/uploads", "/api/v1/attachments")
        },
    )
    for module in API_MODULES:
        app.include_router(module.router)
    app.include_router(dicomweb.router)
    app.include_router(fhir.router)  # the locator's FHIR search
    app.state.scim_directories = getattr(hub, "scim_directories", ())  # [[scim]]: who may provision users
    app.include_router(scim.router)  # SCIM 2.0 provisioning under /scim/v2, with the directory's own token
    for module in PAGE_MODULES:
        app.include_router(module.router)
    if getattr(hub, "demo", None) is not None:  # `imex serve --demo` only: the e-mail it caught, at /demo/mail
        from imex.web.pages import demo_mail

        app.include_router(demo_mail.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with hub.db.reader() as conn:  # a read transaction: never waits for a writer's lock
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # report, do not raise: this is what monitoring reads
            checks["database"] = f"error: {type(exc).__name__}"
        checks["dicom"] = "ok" if hub.listener.server is not None else "stopped"
        checks["store"] = _store_refusal(hub) or "ok"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "version": __version__, "checks": checks},
            status_code=200 if healthy else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        refusal = _metrics_refusal(request, hub.config["http.metrics_token"])
        if refusal is not None:
            return refusal
        body = generate_latest(metrics.REGISTRY).decode() + _gauges(hub)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    return app
