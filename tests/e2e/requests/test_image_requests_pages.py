"""The request pages without PACS, in chromium: the source declines with a reason (asked in a prompt),
the requester sees the reason and the history, cancels another request (after confirming), and pages of
another institution's request or with malformed filters are refused."""

from __future__ import annotations

from playwright.sync_api import expect

from imex.directory import add_institution, add_node
from portaltools import add_user, base_url, bearer, browser, sign_in_page
from requesttools import NHS, request_state


def test_decline_and_cancel_through_the_pages(make_config, start_hub, browser_page):
    page = browser_page
    hub = start_hub(make_config())
    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    add_institution(hub.db, "RRV", "Barts Health")
    for name, aet, port, ods in (
        ("KINGS_PACS", "RJZPACS", 11112, "RJZ"),
        ("IMPERIAL_PACS", "RYJPACS", 11113, "RYJ"),
        ("BARTS_PACS", "BARTSPACS", 11114, "RRV"),
    ):
        add_node(hub.db, name, aet, "127.0.0.1", port, ods)
    add_user(hub, "imp_doc", "RYJ", ["sender"])
    add_user(hub, "kings_guard", "RJZ", ["pacs_guardian"])
    add_user(hub, "barts_doc", "RRV", ["sender"])
    doc = bearer(hub, "imp_doc")
    body = {"source": "RJZ", "nhs_number": NHS, "reason": "Comparison", "urgency": "emergency"}
    first, second = (doc.post("/api/v1/requests", json=body).json()["id"] for _ in range(2))

    sign_in_page(page, hub, "kings_guard")
    page.click("nav >> text=Requests")
    page.select_option("#request-filter select[name=direction]", "incoming")
    page.click("#request-filter button[type=submit]")
    expect(page.locator("#requests")).to_contain_text("emergency")
    page.click(f"#requests >> text='{first}'")
    expect(page.locator("#accept")).to_be_visible()
    expect(page.locator("#cancel")).to_have_count(0)  # the source cannot cancel
    page.once("dialog", lambda dialog: dialog.accept("Patient never seen at King's"))
    page.click("#decline")
    expect(page.locator("h1")).to_contain_text("declined")
    expect(page.locator("#decline-reason")).to_have_text("Patient never seen at King's")
    page.context.clear_cookies()

    sign_in_page(page, hub, "imp_doc")
    page.goto(f"{base_url(hub)}/requests/{first}")
    expect(page.locator("#decline-reason")).to_have_text("Patient never seen at King's")
    expect(page.locator("#history")).to_contain_text("declined")
    expect(page.locator("#accept")).to_have_count(0)  # the requester cannot accept
    expect(page.locator("#fulfil")).to_have_count(0)
    page.goto(f"{base_url(hub)}/requests/{second}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    expect(page.locator("h1")).to_contain_text("cancelled")
    assert request_state(hub, second) == "cancelled"
    assert [e for e in page.console_errors if "status of" not in e] == []  # type: ignore[attr-defined]

    barts = browser(hub, "barts_doc")
    assert barts.get(f"/requests/{first}").status_code == 404
    assert "Request" not in barts.get("/requests").text.split("<tbody>")[1].split("</tbody>")[0]
    assert barts.get("/requests?state=bogus").status_code == 422
    assert barts.get("/requests/not-a-number").status_code == 422
    guard = bearer(hub, "kings_guard")
    third = doc.post("/api/v1/requests", json=body).json()["id"]
    too_many = guard.post(f"/api/v1/requests/{third}/fulfil", json={"study_uids": ["1.2.3"] * 51})
    assert too_many.status_code == 422
    assert guard.get(f"/requests/{third}?search=1&patient_id=" + "9" * 100).status_code == 422
