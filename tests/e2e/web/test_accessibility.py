"""The main pages in Chromium, as the people who use them see them: axe-core (npm) finds no serious or
critical accessibility violation, nothing stretches the page sideways at phone width, and a screenshot
of each page at 1440 px and at 390 px is kept in test-screenshots/ for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

import peers
from hubtools import register_hospitals, wait_until
from imex.samples import make_study
from portaltools import add_user, base_url, sign_in_page

AXE = Path(__file__).parents[2] / "helpers" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(__file__).parents[3] / "test-screenshots"

pytestmark = [
    pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed (bash scripts/setup.sh --test)"),
    pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed"),
]

PAGES = (
    ("dashboard", "/"),
    ("worklist", "/worklist?direction=all"),
    ("destinations", "/destinations"),
    ("transfer", "/transfers/1"),
    ("study", "/studies/1"),
    ("viewer", "/studies/1/viewer"),
    ("folders", "/folders"),
    ("requests", "/requests"),
    ("request-new", "/requests/new"),
    ("exchanges", "/exchanges"),
    ("upload", "/upload"),
    ("locator", "/locator"),
    ("audit", "/audit"),
    ("nodes", "/admin/nodes"),
    ("institution", "/admin/institution"),
    ("users", "/admin/users"),
    ("quarantine", "/admin/quarantine"),
    ("account", "/account"),
)


def _violations(page) -> list[str]:  # type: ignore[no-untyped-def]
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => v.id + ": " + v.help + " — " + v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | "));
        }"""
    )
    return list(found)


def _widest(page) -> str:  # type: ignore[no-untyped-def]
    """The outermost elements that reach past the window's right edge, to say what to fix."""
    return page.evaluate(
        """() => {
            const out = [];
            for (const el of document.querySelectorAll("body *")) {
                const box = el.getBoundingClientRect();
                if (box.right > window.innerWidth + 2 && !(el.parentElement && el.parentElement.getBoundingClientRect().right > window.innerWidth + 2)) {
                    const cs = getComputedStyle(el.parentElement);
                    out.push("[parent " + el.parentElement.tagName + " " + cs.display + " " + cs.overflowX + " " + Math.round(el.parentElement.getBoundingClientRect().right) + "] " + el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className ? "." + String(el.className).split(" ").join(".") : "") + " " + Math.round(box.right));
                }
            }
            return out.slice(0, 4).join(", ");
        }"""
    )


def test_main_pages_pass_axe_and_fit_a_phone(make_config, start_hub, storescp, browser_page, tmp_path):
    pacs = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=pacs.port)
    add_user(hub, "admin", "RYJ", ["system_admin"])
    files = make_study(tmp_path / "s", instances_per_series=2, patient_name="ACCESS^ANNA")
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0, 0]
    pacs.wait_for(2)
    # axe is injected as a script: this context lets it past the portal's Content Security Policy
    context = browser_page.context.browser.new_context(bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in_page(page, hub, "admin")
    wait_until(lambda: page.reload() and "ACCESS" in page.content(), message="the arrival on the dashboard")
    SHOTS.mkdir(exist_ok=True)
    problems: dict[str, list[str]] = {}
    for name, path in PAGES:
        for width, height in ((1440, 900), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            response = page.goto(base_url(hub) + path)
            assert response is not None and response.status == 200, (path, response and response.status)
            page.wait_for_load_state("networkidle")
            if width == 390:
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 2:
                    problems.setdefault(name, []).append(f"{overflow} px wider than a 390 px phone: {_widest(page)}")
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            if width != 390:
                found = _violations(page)
                if found:
                    problems.setdefault(name, []).extend(found)
    assert problems == {}, "\n".join(f"{page}: {p}" for page, ps in problems.items() for p in ps)
    assert errors == []
    context.close()
