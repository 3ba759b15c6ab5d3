"""What a PACS manager changes from the pages rather than the API: a node's address (Edit on the nodes
page) and the institution's own settings (the Institution page), in Chromium."""

from __future__ import annotations

from sqlalchemy import select

from hubtools import register_hospitals
from imex.db.models import AuditEvent, Institution, Node
from portaltools import add_user, base_url, sign_in_page


def test_a_manager_edits_a_node_and_the_institution_settings(make_config, start_hub, browser_page):
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=11112)
    add_user(hub, "manager", "RYJ", ["institution_admin"])
    page = browser_page
    sign_in_page(page, hub, "manager")

    page.goto(base_url(hub) + "/admin/nodes")
    row = page.locator("#nodes tr", has_text="IMPERIAL_PACS").first
    row.get_by_role("button", name="Edit").click()
    form = page.locator("tr.edit-row:not([hidden]) form")
    assert form.locator("input[name=ae_title]").input_value() == "RYJPACS"  # filled with what is there
    form.locator("input[name=port]").fill("4104")
    form.locator("input[name=allow_get]").uncheck()
    form.get_by_role("button", name="Save changes").click()
    page.wait_for_load_state("networkidle")
    page.locator("#nodes", has_text="127.0.0.1:4104").wait_for()
    with hub.db.session() as s:
        node = s.scalar(select(Node).where(Node.name == "IMPERIAL_PACS"))
        assert (node.port, node.allow_get, node.allow_find, node.destination) == (4104, False, True, True)

    page.click("nav summary:has-text('Manage')")
    page.click("nav >> text=Institution")
    settings = page.locator("section.institution[data-ods=RYJ] form")
    settings.locator("input[name=require_recipient]").check()
    settings.locator("input[name=retention_hours]").fill("48")
    settings.get_by_role("button", name="Save RYJ settings").click()
    page.wait_for_load_state("networkidle")
    page.locator("section.institution[data-ods=RYJ] input[name=require_recipient]:checked").wait_for()
    with hub.db.session() as s:
        inst = s.scalar(select(Institution).where(Institution.ods_code == "RYJ"))
        assert (inst.require_recipient, inst.retention_hours, inst.local_passwords) == (True, 48, True)
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "institution.change")).username == "manager"
    assert page.locator("section.institution").count() == 1  # only the manager's own institution
