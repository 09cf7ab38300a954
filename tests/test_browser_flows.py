"""The demo as a person uses it, in a real Chromium at 1366×768: mistakes, fast and out-of-order
clicks, long runs, undo, the 3D object, and what is above the fold.

One server for the module (the shipped weights when present, else small random networks); every test
opens its own page, that is its own session. The SeqPatch network can be slowed down (``SLOW``) so a
click is still running when the next one comes, as on a 2-core CPU. Screenshots go to a temporary
folder (``SEQPATCH_SCREENSHOTS`` names another one, e.g. to refresh ``docs/screenshot.png`` by hand).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import free_port
from test_browser import CHROMIUM, CHROMIUM_ARGS, _inner_point, _predictor

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

VIEWPORT = {"width": 1366, "height": 768}
#: Seconds the SeqPatch network sleeps per call (a test sets it, and sets it back).
SLOW = {"s": 0.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, examples): the demo on a free port, with the SeqPatch network slowed by ``SLOW``."""
    from app import LAUNCH_KWARGS, build_demo, find_examples

    examples = find_examples()
    if not examples:
        pytest.skip("needs the bundled examples/")
    predictor = _predictor()
    net = predictor.models["seqpatch"]
    inner = net.forward

    def slowed(x):
        if SLOW["s"]:
            time.sleep(SLOW["s"])
        return inner(x)

    net.forward = slowed  # an instance attribute: nn.Module.__call__ takes it
    from app.session import load_box_model

    demo = build_demo(predictor, examples=examples, box_model=load_box_model())  # as app.py builds it
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS)
    yield f"http://127.0.0.1:{port}/", examples
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("SEQPATCH_SCREENSHOTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


class Page:
    """One visitor's page, with the few gestures the tests need."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.page.close()

    def pick_example(self, image_path: str) -> None:
        from playwright.sync_api import expect

        label = Path(image_path).name.split(".")[0].replace("_", " ")
        self.page.locator("#examples").get_by_text(re.compile(label, re.I)).first.click(timeout=60_000)
        expect(self.page.locator("#summary")).to_contain_text("voxels", timeout=60_000)
        expect(self.page.locator("#status")).to_contain_text("segmented slice", timeout=60_000)

    def geometry(self) -> tuple[float, float, float, float, float]:
        """(left, top, scale, off_x, off_y) of the slice picture (object-fit: contain)."""
        img = self.page.locator("#overlay img")
        self.page.wait_for_function(
            "() => { const i = document.querySelector('#overlay img');"
            " return i && i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0; }",
            timeout=30_000,
        )
        left, top, w, h, nw, nh = img.evaluate(
            "i => { const r = i.getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight]; }"
        )
        scale = max(nw / w, nh / h)
        return left, top, scale, (w - nw / scale) / 2, (h - nh / scale) / 2

    def click_slice(self, y: float, x: float, factor: int) -> tuple[float, float]:
        """Click slice pixel (y, x); returns the (y, x) the app reads from that click."""
        from app import render

        self.page.locator("#overlay img").scroll_into_view_if_needed()
        left, top, scale, off_x, off_y = self.geometry()
        py, px = render.slice_to_display(np.array([y, x], dtype=float), factor)
        self.page.mouse.click(left + off_x + (px + 0.5) / scale, top + off_y + (py + 0.5) / scale)
        return render.display_to_slice([round(px), round(py)], factor, (10_000, 10_000))

    def point(self) -> tuple[int, float, float] | None:
        """The (z, y, x) the status line names as the shown slice's click, if any."""
        m = re.search(r"Point \(z, y, x\) = \((\d+), ([\d.]+), ([\d.]+)\)", self.status())
        return (int(m.group(1)), float(m.group(2)), float(m.group(3))) if m else None

    def wait_done(self, z: int, yx: tuple[float, float], timeout: float = 120_000) -> tuple[int, float, float]:
        """Until the status names a click on slice z within a voxel of (y, x) (the browser scales the
        picture, so the pixel it reports can differ by a fraction) and both methods' table is shown."""
        from playwright.sync_api import expect

        end = time.monotonic() + timeout / 1000
        while True:
            p = self.point()
            text = self.status()
            if p and p[0] == z and abs(p[1] - yx[0]) <= 1.0 and abs(p[2] - yx[1]) <= 1.0 and "running" not in text:
                break
            assert time.monotonic() < end, f"no result for {z, yx}: {text}"
            time.sleep(0.2)
        expect(self.page.locator("#metrics table")).to_be_visible(timeout=timeout)
        return p

    def toast(self, text: str) -> None:
        from playwright.sync_api import expect

        expect(self.page.get_by_text(re.compile(re.escape(text), re.I)).first).to_be_visible(timeout=30_000)

    def assert_not_blanked(self) -> None:
        """No output shows Gradio's red error state, and no error toast: the page kept its state."""
        from playwright.sync_api import expect

        expect(self.page.locator(".toast-body.error")).to_have_count(0)
        for elem in ("overlay", "metrics", "status", "lik-seqpatch", "lik-unet", "slice", "coronal"):
            expect(self.page.locator(f"#{elem} .error")).to_have_count(0)
        expect(self.page.locator("#overlay img")).to_be_visible()

    def status(self) -> str:
        return self.page.locator("#status").inner_text()


def _case(examples, name: str = "lung2_ct_crop"):
    from app import render

    image_path, label_path = next(e for e in examples if name in e[0])
    z, y, x = _inner_point(label_path)
    shape = sitk.GetArrayFromImage(sitk.ReadImage(label_path)).shape
    return image_path, label_path, (z, y, x), render.display_factor(shape[1:]), shape


@pytest.fixture()
def page(server, browser):
    url, _ = server
    p = Page(browser, url)
    yield p
    assert not p.errors, p.errors
    p.close()


def test_mistakes_are_notifications_and_the_page_stays_usable(page, server):
    """Defect 1: undo with nothing to undo, export before a click, a teaching tab before a click."""
    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    page.page.locator("#export-btn").click()
    page.toast("nothing to export yet")
    page.assert_not_blanked()
    page.page.get_by_role("tab", name="Click robustness").click()
    page.page.locator("#rob-btn").click()
    page.toast("click on the object")
    page.assert_not_blanked()
    yx = page.click_slice(y, x, f)
    page.wait_done(z, yx)
    page.page.locator("#undo-btn").click()
    expect_status_without_point(page, z, yx)
    page.page.locator("#undo-btn").click()
    page.toast("nothing to undo")
    page.assert_not_blanked()
    yx = page.click_slice(y + 1, x, f)  # the slice still answers a click
    page.wait_done(z, yx)
    page.assert_not_blanked()


def expect_status_without_point(page: Page, z: int, yx: tuple[float, float]) -> None:
    end = time.monotonic() + 30
    while page.point() is not None:
        assert time.monotonic() < end, page.status()
        time.sleep(0.2)


def test_second_click_during_a_seqpatch_run_wins(page, server):
    """Defect 3: a click 0.5 s into a slow SeqPatch run is applied, not dropped."""
    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    SLOW["s"] = 2.0
    try:
        page.click_slice(y, x, f)
        time.sleep(0.6)
        second = page.click_slice(y + 3, x - 2, f)
        page.wait_done(z, second, timeout=60_000)
    finally:
        SLOW["s"] = 0.0
    page.assert_not_blanked()


def test_a_long_result_names_the_click_it_was_computed_for(page, server):
    """Defect 2: click A, run the robustness grid, click B during the run: the grid says A."""
    from playwright.sync_api import expect

    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    a = page.wait_done(z, page.click_slice(y, x, f))[1:]
    page.page.get_by_role("tab", name="Click robustness").click()
    SLOW["s"] = 0.5
    try:
        page.page.locator("#rob-btn").click()
        time.sleep(0.8)
        b = page.wait_done(z, page.click_slice(y + 4, x + 4, f), timeout=120_000)[1:]
        note = page.page.locator("#rob-note")
        expect(note).to_contain_text("mean Dice", timeout=180_000)
    finally:
        SLOW["s"] = 0.0
    text = note.inner_text()
    assert f"({a[0]:.1f}, {a[1]:.1f})" in text, text
    assert f"({b[0]:.1f}, {b[1]:.1f})" not in text, text


def test_the_3d_object_is_on_every_slice_and_undo_removes_it(page, server, tmp_path):
    """Defects 4 and 6: the object in the status, on other slices and in the planes; undo and export."""
    from playwright.sync_api import expect

    image, _, (z, y, x), f, shape = _case(server[1])
    page.pick_example(image)
    a = page.click_slice(y, x, f)
    page.wait_done(z, a)
    coronal_before = page.page.locator("#coronal img").get_attribute("src")
    page.page.get_by_role("tab", name="Whole object in 3D").click()
    page.page.locator("#obj-btn").click()
    expect(page.page.locator("#obj-note")).to_contain_text("mL", timeout=120_000)
    expect(page.page.locator("#status")).to_contain_text("3D object", timeout=30_000)
    m = re.search(r"slices (\d+)–(\d+)", page.status())
    assert m, page.status()
    lo, hi = int(m.group(1)), int(m.group(2))
    assert lo < hi, "the lung2 tumour spans several slices"
    assert page.page.locator("#coronal img").get_attribute("src") != coronal_before
    other = lo if lo != z else hi
    _move_slider(page, other, shape[0])
    expect(page.page.locator("#status")).to_contain_text("on this slice.", timeout=30_000)
    # undo takes the object back first, then the export holds no 3D object
    page.page.locator("#undo-btn").click()
    expect(page.page.locator("#status")).not_to_contain_text("3D object", timeout=30_000)
    page.page.locator("#export-btn").click()
    links = page.page.locator("#exports a")
    expect(links.first).to_be_visible(timeout=30_000)
    hrefs = [a.get_attribute("href") for a in links.all()]
    names = [unquote(urlparse(h).path).rsplit("/", 1)[-1] for h in hrefs]
    assert not any("_3d_mask" in n for n in names), names
    assert any(f"slice{z}_overlay" in n for n in names), names  # a slice that has a result
    href = next(h for h, n in zip(hrefs, names, strict=True) if n.endswith("_clicks.json"))
    rec = json.loads(page.page.request.get(urljoin(page.page.url, href)).text())
    assert rec["objects_3d"] == {}


def _move_slider(page: Page, z: int, nz: int) -> None:
    box = page.page.locator("#slice input[type=number]")
    box.fill(str(z))
    box.press("Enter")
    from playwright.sync_api import expect

    expect(page.page.locator("#overlay img")).to_be_visible()
    page.page.wait_for_timeout(500)


def test_the_window_stays_put_between_nearby_clicks(page, server):
    """Defect 5: every click on the volume is read in the window chosen at load, and it is shown."""
    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    windows = []
    for dy, dx in ((0, 0), (4, 0), (0, -4), (-6, 6)):
        yx = page.click_slice(y + dy, x + dx, f)
        page.wait_done(z, yx)
        m = re.search(r"Window (.+?\)):", page.status())
        assert m, page.status()
        windows.append(m.group(1))
    assert len(set(windows)) == 1 and windows[0].startswith("auto → "), windows


def test_metrics_say_na_instead_of_inventing_numbers(page, server):
    """Defect 7: on a slice without the label, distances to an empty mask are n/a, not 160 mm."""
    from playwright.sync_api import expect

    image, label, (z, y, x), f, shape = _case(server[1])
    lab = sitk.GetArrayFromImage(sitk.ReadImage(label)) != 0
    empty = [k for k in range(shape[0]) if not lab[k].any()]
    assert empty, "the example has slices without the label"
    page.pick_example(image)
    _move_slider(page, empty[0], shape[0])
    yx = page.click_slice(y, x, f)
    page.wait_done(empty[0], yx)
    expect(page.page.locator("#metrics")).to_contain_text("n/a", timeout=30_000)
    text = page.page.locator("#metrics").inner_text()
    assert "n/a" in text, text


def test_both_answers_are_above_the_fold_at_1366x768(page, server, shots):
    """Defect 8: after one click, both contours, the Dice table and both likelihood maps are seen
    without scrolling; the screenshot of that view is the README's."""
    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    yx = page.click_slice(y, x, f)
    page.wait_done(z, yx)
    page.page.mouse.move(5, 5)
    page.page.evaluate("window.scrollTo(0, 0)")
    for sel in ("#overlay img", "#metrics table", "#lik-seqpatch img", "#lik-unet img"):
        box = page.page.locator(sel).bounding_box()
        assert box is not None, sel
        assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (sel, box)
        assert box["x"] + box["width"] <= VIEWPORT["width"], (sel, box)
    assert "Dice" in page.page.locator("#metrics table").inner_text()
    page.page.screenshot(path=str(shots / "screenshot.png"))
