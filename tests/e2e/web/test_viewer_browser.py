"""The 2D viewer in headless chromium (Playwright): a 300-slice CT opened from its study page, scrolled to
slice 150 with the wheel, keys and slider, the lung preset, zoom, a length measured with Pixel Spacing,
invert and two series side by side; the opening is audited. Screenshots land in the test's folder."""

from __future__ import annotations

import pydicom
import pytest
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import AuditEvent, Study  # noqa: E402
from imex.samples import make_study  # noqa: E402
from portaltools import add_user, base_url, sign_in_page  # noqa: E402


@pytest.fixture
def page(browser_page):  # type: ignore[no-untyped-def]
    return browser_page


@pytest.fixture
def ct(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(
        tmp_path / "ct",
        series=1,
        instances_per_series=300,
        rows=256,
        columns=256,
        patient_name="VIEWER^VERA",
        patient_id="K300",
        accession="ACC300",
        description="CT CHEST",
    )
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    files += make_study(
        tmp_path / "scout",
        series=1,
        instances_per_series=3,
        rows=256,
        columns=256,
        patient_name="VIEWER^VERA",
        patient_id="K300",
        accession="ACC300",
        study_uid=study_uid,
        extra={"SeriesNumber": 2, "SeriesDescription": "SCOUT"},
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * len(files)
    wait_until(lambda: transfer_states(hub) == [("delivered", 303, 303)], timeout=60, message="delivery")
    add_user(hub, "imperial_rad", "RYJ", ["viewer"])
    hub.test_files = files  # type: ignore[attr-defined]
    return hub


def _sign_in(tab, hub) -> None:  # type: ignore[no-untyped-def]
    sign_in_page(tab, hub, "imperial_rad")


def _state(tab) -> dict:  # type: ignore[no-untyped-def]
    return tab.evaluate("""() => { const c = document.querySelector('.viewport.active canvas');
        return {index: c.dataset.index, loaded: c.dataset.loaded || '', scale: c.dataset.scale,
                measure: c.dataset.measure || '',
                bl: document.querySelector('.viewport.active .ov.bl').textContent,
                br: document.querySelector('.viewport.active .ov.br').textContent,
                tl: document.querySelector('.viewport.active .ov.tl').textContent}; }""")


def test_scroll_preset_zoom_measure_compare(ct, page, tmp_path):
    with ct.db.sessions() as s:
        study = s.scalar(select(Study))
    _sign_in(page, ct)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/rendered" in r.url else None)
    page.goto(f"{base_url(ct)}/studies/{study.id}")
    page.click("text=Open in viewer")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.wait_for_function("() => (document.querySelector('.viewport canvas').dataset.loaded || '') !== ''")
    state = _state(page)
    assert "VIEWER, VERA" in state["tl"] and "K300" in state["tl"]
    assert "Im 1 / 300" in state["bl"] and "W 400  L 40" in state["br"]
    assert page.locator(".thumb").count() == 2
    page.screenshot(path=str(tmp_path / "viewer-open.png"))
    with ct.db.sessions() as s:
        details = s.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "study.view", AuditEvent.study_uid == study.study_uid)
        ).all()
        assert details.count("opened in the viewer") == 1  # the study page records its own view too

    box = page.locator(".viewport canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(10):  # the wheel: slices 2..11
        page.mouse.wheel(0, 100)
    page.wait_for_function("() => document.querySelector('.viewport canvas').dataset.index === '11'")
    page.locator(".viewport canvas").focus()
    for _ in range(13):  # PageDown: 10 slices each, to 141
        page.keyboard.press("PageDown")
    for _ in range(9):  # arrow keys, to 150
        page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.querySelector('.viewport canvas').dataset.index === '150'")
    page.wait_for_function(
        "() => { const c = document.querySelector('.viewport canvas');"
        " return (c.dataset.loaded || '').split('/')[0] !== '' && c.dataset.index === '150'; }"
    )
    sop150 = pydicom.dcmread(ct.test_files[149]).SOPInstanceUID
    page.wait_for_function(f"() => document.querySelector('.viewport canvas').dataset.loaded === '{sop150}/1/'")
    assert "Im 150 / 300" in _state(page)["bl"]
    # prefetch: the neighbours were asked for before they were shown
    ahead = pydicom.dcmread(ct.test_files[155]).SOPInstanceUID
    for _ in range(100):
        if any(ahead in url for url in requests):
            break
        page.wait_for_timeout(100)
    assert any(ahead in url for url in requests)
    page.screenshot(path=str(tmp_path / "viewer-slice150.png"))

    page.click("button[data-preset=lung]")
    page.wait_for_function(
        f"() => document.querySelector('.viewport canvas').dataset.loaded === '{sop150}/1/-600,1500'"
    )
    assert "W 1500  L -600" in _state(page)["br"]
    assert any(sop150 in url and "window=-600%2C1500" in url for url in requests)
    page.screenshot(path=str(tmp_path / "viewer-lung.png"))

    scale_fit = float(_state(page)["scale"])
    page.click("button[data-action=zoom-in]")
    assert "Zoom 200%" in _state(page)["br"]
    assert float(_state(page)["scale"]) == pytest.approx(2 * scale_fit)

    page.click("button[data-tool=measure]")
    x0, y0 = box["x"] + box["width"] / 2 - 100, box["y"] + box["height"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 200, y0, steps=5)
    page.mouse.up()
    measured, unit = _state(page)["measure"].split()
    spacing = float(pydicom.dcmread(ct.test_files[149]).PixelSpacing[1])
    assert unit == "mm"
    assert float(measured) == pytest.approx(200 / (2 * scale_fit) * spacing, abs=0.2)
    page.screenshot(path=str(tmp_path / "viewer-measure.png"))

    page.click("button[data-action=invert]")
    assert "inverted" in _state(page)["br"]
    page.click("button[data-action=reset]")
    assert "Zoom 100%" in _state(page)["br"] and "inverted" not in _state(page)["br"]

    page.click("button[data-action=compare]")
    page.wait_for_function("() => document.querySelectorAll('.viewport').length === 2")
    page.wait_for_function("() => (document.querySelectorAll('.viewport canvas')[1].dataset.loaded || '') !== ''")
    assert "SCOUT" in page.locator(".viewport.active .ov.bl").text_content()
    page.screenshot(path=str(tmp_path / "viewer-compare.png"))
    assert page.console_errors == []  # type: ignore[attr-defined]
