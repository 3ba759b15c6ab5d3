"""The demo's mail page (`imex serve --demo` only; app.py adds it when the hub runs the demo): the e-mail
the hub sent, as the demo's mail catcher (imex.demo.mail) caught it, so a newcomer reads the arrival
alerts and one-time codes without a mail server. Any signed-in user may read it: every address is made
up, and the demo holds no real patient."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from imex.auth.permissions import Principal
from imex.demo.mail import Mailbox
from imex.web.context import Portal
from imex.web.deps import portal, signed_in
from imex.web.pages.render import render

router = APIRouter(include_in_schema=False)


@router.get("/demo/mail")
def demo_mail_page(request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> HTMLResponse:
    demo = getattr(pt.hub, "demo", None)
    return render(
        request,
        "demo_mail.html",
        messages=Mailbox(pt.config.data_dir).messages(),
        smtp_port=getattr(getattr(demo, "mail", None), "port", None),
    )
