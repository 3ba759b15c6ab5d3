"""Administration pages (mirrors web/api/admin.py): nodes, users, roles, routing rules and worklists. They
render the same reads as the API; their actions are API calls made by static/imex.js."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth.permissions import PERMISSIONS, Principal
from imex.web.context import Portal
from imex.web.deps import db_session, portal, signed_in
from imex.web.pages.render import render
from imex.web.views import admin as admin_views

router = APIRouter(include_in_schema=False)


@router.get("/admin/nodes")
def nodes_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(
        request, "admin_nodes.html", nodes=admin_views.nodes(s, p), institutions=admin_views.institutions(s, p)
    )


@router.get("/admin/institution")
def institution_page(
    request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> HTMLResponse:
    """The settings an institution's admins change: contact, sign-in policy, retention, quota, recipients."""
    p.require("users.manage")
    return render(
        request,
        "admin_institution.html",
        institutions=admin_views.institutions(s, p),
        default_retention=pt.config["retention.hours"],
        certificates_offered=pt.config["http.client_certificates"] != "off",
    )


@router.get("/admin/users")
def users_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(
        request,
        "admin_users.html",
        users=admin_views.users(s, p),
        roles=admin_views.roles(s, p),
        institutions=admin_views.institutions(s, p),
    )


@router.get("/admin/roles")
def roles_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    p.require("roles.manage")
    return render(request, "admin_roles.html", roles=admin_views.roles(s, p), permissions=PERMISSIONS)


@router.get("/admin/rules")
def rules_page(request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> HTMLResponse:
    return render(request, "admin_rules.html", rules=admin_views.rules(p, pt.config))


@router.get("/admin/worklists")
def worklists_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    p.require("nodes.manage")
    return render(request, "admin_worklists.html", worklists=admin_views.worklists(s, p))
