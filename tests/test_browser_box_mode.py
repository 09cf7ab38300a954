"""A box the user draws (issue 28), in a real Chromium at 1366×768: on brain1, stored LAS (its rows are
shown upside down), a click on the tumour, then box mode and two corners round it: three contours and
three table rows without scrolling, LiteMedSAM's row named as the user's box with its time, and its Dice
against the label, which is in voxel order, says the corners were mapped as clicks are.

One server for the module (``test_browser_flows``'s), every test its own page, that is its own session.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
import test_browser_flows as flows
from test_browser import CHROMIUM
from test_browser_flows import VIEWPORT, Page, _case
from test_browser_page import colour_pixels, picture

# the flow tests' fixtures: one server and one Chromium per module, a page per test
server, browser, shots, page = flows.server, flows.browser, flows.shots, flows.page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def _click_voxel(page: Page, slices, plane: tuple[int, int], y: float, x: float, f: int) -> tuple[float, float]:
    """Click voxel (y, x) of the slice shown (``slices``: its display, turned and flipped as the page
    shows it; ``plane``: its voxel-order (y, x) size); returns the voxel (y, x) the app reads."""
    shown = slices.points_to_display(np.array([y, x], dtype=float), plane)
    read = page.click_slice(float(shown[0]), float(shown[1]), f)
    vy, vx = slices.points_to_plane(np.array(read, dtype=float), plane)
    return float(vy), float(vx)


def _new_picture(page: Page, before: str | None) -> None:
    """Until the slice picture is another than ``before`` (its src)."""
    page.page.wait_for_function(
        "b => { const i = document.querySelector('#overlay img'); return i && i.src && i.src !== b; }",
        arg=before,
        timeout=60_000,
    )


def test_a_drawn_box_beside_the_click_above_the_fold(page, server, shots):
    from playwright.sync_api import expect

    from app.drawing import COLOURS
    from app.handlers import BOX_MODE
    from app.session import load_box_model
    from seqpatch_core.images.orientation import orientation

    if load_box_model() is None:
        pytest.skip("needs weights/litemedsam.safetensors")
    image, label, (z, y, x), f, shape = _case(server[1], "brain1_mr_crop")
    slices = orientation(sitk.ReadImage(image).GetDirection()).slices
    assert slices.flips[0], "brain1 is stored LAS: its rows are shown upside down"
    plane = shape[1:]
    page.pick_example(image)
    page.wait_done(z, _click_voxel(page, slices, plane, y, x, f))
    table = page.page.locator("#metrics table")
    expect(table).to_contain_text("LiteMedSAM", timeout=120_000)  # the click's own box (the label's)
    expect(page.page.locator("#progress")).not_to_contain_text("running", timeout=60_000)

    # box mode, two corners 4 voxels round the label on this slice, the first at its smallest (y, x)
    page.page.locator("#click-mode label", has_text=BOX_MODE).click()
    lab = sitk.GetArrayFromImage(sitk.ReadImage(label))[z] != 0
    ys, xs = np.nonzero(lab)
    before = page.page.locator("#overlay img").get_attribute("src")
    _click_voxel(page, slices, plane, ys.min() - 4, xs.min() - 4, f)
    _new_picture(page, before)  # the corner, marked
    _click_voxel(page, slices, plane, ys.max() + 4, xs.max() + 4, f)
    expect(table).to_contain_text("your box", timeout=120_000)
    expect(page.page.locator("#progress")).not_to_contain_text("running", timeout=60_000)

    page.page.mouse.move(5, 5)
    page.page.evaluate("window.scrollTo(0, 0)")
    rows = table.locator("tbody tr")
    assert rows.count() == 3, table.inner_text()
    assert rows.nth(0).inner_text().startswith("SeqPatch") and rows.nth(1).inner_text().startswith("U-net")
    mine = rows.nth(2).inner_text()
    m = re.fullmatch(r"LiteMedSAM \(your box\)\t(\d\.\d{3})\t.*\t\d+\s*", mine)
    assert m, mine  # named as the user's box; the last cell: its time (ms)
    assert float(m.group(1)) > 0.5, mine  # the box is round the label in voxel order
    for sel in ("#overlay img", "#metrics table"):
        box = page.page.locator(sel).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (sel, box)
        assert box["x"] + box["width"] <= VIEWPORT["width"], (sel, box)
    shown = picture(page)
    for key in ("seqpatch", "unet", "litemedsam"):
        assert colour_pixels(shown, COLOURS[key], tol=4).sum() > 50, key
    page.page.screenshot(path=str(shots / "box_mode.png"))
