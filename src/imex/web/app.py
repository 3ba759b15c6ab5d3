"""The HTTP application: the portal's pages, the JSON API under /api/v1 (OpenAPI at
/api/v1/openapi.json), static files, GET /healthz and GET /metrics (Prometheus text format); with the
security headers and the request size limit every response and request goes through."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import generate_latest
from sqlalchemy import func, select, text

from imex import __version__, metrics
from imex.db.models import Study, Transfer
from imex.web import dicomweb, errors, folder_pages, pages, viewer
from imex.web.api import account, admin, audit_trail, folders, storage, transfers
from imex.web.api import priority as priority_api
from imex.web import link_pages
from imex.web.api import download as download_api
from imex.web.api import links as links_api
from imex.web.context import Portal
from imex.web.guard import BodyLimit, SecurityHeaders

if TYPE_CHECKING:
    from imex.hub import Hub

_STATES = ("pending", "sending", "delivered", "confirmed", "failed", "cancelled")


def _gauges(hub: "Hub") -> str:
    """Queue depths from the database, shared by every process, at scrape time."""
    with hub.db.engine.connect() as conn:
        by_state = dict(conn.execute(select(Transfer.state, func.count()).group_by(Transfer.state)).all())
        quarantined = conn.execute(select(func.count()).select_from(Study).where(
            Study.route_state == "quarantined")).scalar_one()
        waiting = conn.execute(select(func.count()).select_from(Study).where(
            Study.route_state == "receiving")).scalar_one()
    lines = ["# HELP imex_transfers Transfers in the queue by state.", "# TYPE imex_transfers gauge"]
    lines += [f'imex_transfers{{state="{s}"}} {by_state.get(s, 0)}' for s in _STATES]
    lines += ["# HELP imex_studies_quarantined Studies waiting in quarantine for a destination.",
              "# TYPE imex_studies_quarantined gauge", f"imex_studies_quarantined {quarantined}",
              "# HELP imex_studies_receiving Studies still receiving (not yet stable).",
              "# TYPE imex_studies_receiving gauge", f"imex_studies_receiving {waiting}"]
    return "\n".join(lines) + "\n"


def create_app(hub: "Hub") -> FastAPI:
    app = FastAPI(title="imex", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json",
                  description="The imex hub's JSON API: everything the portal's pages do. Sign in with a "
                              "bearer token from POST /api/v1/auth/token, or a portal session cookie plus "
                              "its X-CSRF-Token header on changes.")
    app.state.portal = Portal.create(hub.db, hub.config, hub)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=hub.config["http.max_body_bytes"],
                       uploads={prefix: hub.config["http.max_upload_bytes"]
                                for prefix in ("/dicomweb/studies", "/api/v1/uploads", "/api/v1/attachments")})
    app.add_middleware(SecurityHeaders)
    for module in (transfers, admin, account, audit_trail, folders, storage):
        app.include_router(module.router)
    app.include_router(priority_api.router)
    app.include_router(download_api.router)
    app.include_router(links_api.router)
    app.include_router(link_pages.router)
    app.include_router(dicomweb.router)
    app.include_router(viewer.router)
    app.include_router(folder_pages.router)
    from imex.web import fhir, locator_pages  # the patient imaging locator: API, FHIR search, pages
    from imex.web.api import locator as locator_api

    for module in (locator_api, fhir, locator_pages):
        app.include_router(module.router)
    from imex.web import upload_pages  # uploads from the browser: API and page
    from imex.web.api import uploads as uploads_api

    for module in (uploads_api, upload_pages):
        app.include_router(module.router)
    from imex.web import request_pages  # image requests: API and pages
    from imex.web.api import requests as requests_api

    for module in (requests_api, request_pages):
        app.include_router(module.router)
    app.include_router(pages.router)
    from imex.web import exchange_pages  # exchanges: transactions, messages, attachments, PACS search

    for module in (exchange_pages.transactions_api, exchange_pages.pacs_search, exchange_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with hub.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # report, do not raise: this is what monitoring reads
            checks["database"] = f"error: {type(exc).__name__}"
        checks["dicom"] = "ok" if hub.listener.server is not None else "stopped"
        checks["store"] = "ok" if hub.store.root.is_dir() else "missing"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", "version": __version__, "checks": checks},
                            status_code=200 if healthy else 503)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> PlainTextResponse:
        body = generate_latest(metrics.REGISTRY).decode() + _gauges(hub)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    return app
