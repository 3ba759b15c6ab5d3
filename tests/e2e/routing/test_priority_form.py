"""The transfer page's priority and recipient form, in chromium: the sender of a transfer held for want
of a recipient picks a priority, names a team and a user of the destination from the recipients list,
and the transfer is released with them; people who may not change it see no form, and forged or
oversized requests are refused."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select, update

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import Institution, Transfer, User
from imex.samples import make_study
from portaltools import add_user, base_url, sign_in_page


def _transfer(hub) -> Transfer:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        t = s.scalar(select(Transfer))
        s.expunge_all()
        return t


def test_sender_sets_priority_and_recipient_from_the_page(make_config, start_hub, storescp, browser_page, tmp_path):
    page = browser_page
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    with hub.db.session() as s:
        s.execute(update(Institution).where(Institution.ods_code == "RYJ").values(require_recipient=True))
    add_user(hub, "kingsender", "RJZ", ["sender"])
    add_user(hub, "kingsviewer", "RJZ", ["viewer"])
    rad_id = add_user(hub, "neurorad", "RYJ", ["viewer"])
    with hub.db.session() as s:
        s.execute(update(User).where(User.id == rad_id).values(full_name="Nadia <b>Rad</b>"))
    files = make_study(tmp_path / "s", instances_per_series=2, patient_name="FORM^FIONA")
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 2
    wait_until(lambda: _transfer(hub) and _transfer(hub).state == "held", message="held for a recipient")
    t = _transfer(hub)

    # a viewer of the sending institution sees the transfer but no form
    sign_in_page(page, hub, "kingsviewer")
    page.goto(base_url(hub) + f"/transfers/{t.id}")
    expect(page.locator("h1")).to_contain_text(f"Transfer {t.id}")
    assert page.locator("#priority-form").count() == 0
    page.context.clear_cookies()

    sign_in_page(page, hub, "kingsender")
    page.goto(base_url(hub) + f"/transfers/{t.id}")
    form = page.locator("#priority-form")
    expect(form).to_be_visible()
    options = form.locator("select[name=recipient_user_id] option").all_inner_texts()
    assert "Nadia <b>Rad</b> (neurorad)" in options and not any("kingsviewer" in o for o in options)

    # forged: no CSRF token, then an oversized recipient with one: refused, nothing changes
    url = base_url(hub) + f"/api/v1/transfers/{t.id}/priority"
    assert page.request.post(url, data={"recipient": "x"}).status == 403
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert page.request.post(url, data={"recipient": "x" * 201}, headers={"X-CSRF-Token": token}).status == 422
    assert _transfer(hub).state == "held" and _transfer(hub).recipient is None

    form.locator("select[name=priority]").select_option("urgent")
    form.locator("input[name=recipient]").fill("Neuroradiology on call")
    form.locator("select[name=recipient_user_id]").select_option(str(rad_id))
    form.locator("button[type=submit]").click()
    wait_until(lambda: _transfer(hub).recipient == "Neuroradiology on call", message="saved")
    page.wait_for_load_state()
    expect(page.locator("dl.facts")).to_contain_text("for Neuroradiology on call")
    t = _transfer(hub)
    assert t.priority > 0 and t.recipient_user_id == rad_id
    wait_until(lambda: _transfer(hub).state == "delivered", message="released and delivered")
    assert len(dest.wait_for(2)) == 2
    page.reload()
    expect(page.locator("dl.facts")).to_contain_text("urgent")
    assert page.locator("#priority-form").count() == 0  # delivered: priority and recipient are final
