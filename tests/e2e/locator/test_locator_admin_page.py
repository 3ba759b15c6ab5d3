"""The locator's admin page in a browser: an institution's admin makes its holdings discoverable by a
partner and a network, and sets up a sweep of its PACS, through the page's forms."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select

import peers
from imex.db.models import LocatorSweep
from imex.locator import policy
from locatortools import register_pacs
from portaltools import add_user, base_url, sign_in_page


def test_admin_sets_discoverability_and_a_sweep(make_config, start_hub, browser_page) -> None:
    hub = start_hub(make_config(locator__sweep_scan_interval=3600.0))
    register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "RJZPACS", peers.free_port())
    register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", peers.free_port())
    register_pacs(hub, "RXH", "Brighton and Sussex", "RXH_PACS", "RXHPACS", peers.free_port())
    with hub.db.session() as s:
        policy.set_network(s, "North stroke", ["RJZ", "RXH"])
    add_user(hub, "admin.kings", "RJZ", ["institution_admin"])
    page = browser_page
    sign_in_page(page, hub, "admin.kings")
    page.goto(base_url(hub) + "/admin/locator")
    expect(page.locator("#policy-mode")).to_have_text("none")
    form = page.locator("form[data-api='/api/v1/locator/discoverability']")
    form.locator("select[name=mode]").select_option("restricted")
    form.locator("input[name=partners][value=RGT]").check()
    form.locator("input[name=networks][value='North stroke']").check()
    form.locator("button[type=submit]").click()
    expect(page.locator("#policy-mode")).to_have_text("restricted")
    expect(page.locator("main")).to_contain_text("partners RGT; networks North stroke")
    sweep = page.locator("form[data-api='/api/v1/locator/sweeps/{node_id}']")
    sweep.locator("input[name=interval_minutes]").fill("15")
    sweep.locator("input[name=queries_per_minute]").fill("12")
    sweep.locator("button[type=submit]").click()
    expect(page.locator("#sweeps")).to_contain_text("RJZ_PACS")
    expect(page.locator("#sweeps")).to_contain_text("12/min")
    with hub.db.sessions() as s:
        row = s.scalar(select(LocatorSweep))
        assert row.interval_minutes == 15 and row.queries_per_minute == 12 and row.enabled
        inst = s.scalar(select(policy.Institution).where(policy.Institution.ods_code == "RJZ"))
        assert policy.get(s, inst.id).as_dict() == {
            "institution": "RJZ",
            "mode": "restricted",
            "partners": ["RGT"],
            "networks": ["North stroke"],
        }
    assert page.console_errors == []
