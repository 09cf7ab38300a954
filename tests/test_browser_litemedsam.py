"""LiteMedSAM on the page (issue 28), in a real Chromium at 1366×768: after one click on lung2, three
contours and three table rows are seen without scrolling, with LiteMedSAM's time.

One server for the module (``test_browser_flows``'s: the shipped weights when present), every test its
own page, that is its own session.
"""

from __future__ import annotations

import re

import pytest
import test_browser_flows as flows
from test_browser import CHROMIUM
from test_browser_flows import VIEWPORT, _case
from test_browser_page import colour_pixels, picture

# the flow tests' fixtures: one server and one Chromium per module, a page per test
server, browser, shots, page = flows.server, flows.browser, flows.shots, flows.page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def test_three_contours_and_three_rows_above_the_fold(page, server, shots):
    from playwright.sync_api import expect

    from app.drawing import COLOURS
    from app.session import load_box_model

    if load_box_model() is None:
        pytest.skip("needs weights/litemedsam.safetensors")
    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    page.wait_done(z, page.click_slice(y, x, f))
    table = page.page.locator("#metrics table")
    # LiteMedSAM follows once both contours are shown; its row comes with its time (ms)
    expect(table).to_contain_text("LiteMedSAM", timeout=120_000)
    expect(page.page.locator("#progress")).not_to_contain_text("running", timeout=30_000)
    page.page.mouse.move(5, 5)
    page.page.evaluate("window.scrollTo(0, 0)")
    rows = table.locator("tbody tr")
    assert rows.count() == 3, table.inner_text()
    lite = rows.nth(2).inner_text()
    assert re.search(r"LiteMedSAM \(oracle: label box\).*\t\d+\s*$", lite), lite  # the last cell: ms
    for sel in ("#overlay img", "#metrics table"):
        box = page.page.locator(sel).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (sel, box)
        assert box["x"] + box["width"] <= VIEWPORT["width"], (sel, box)
    shown = picture(page)
    for m in ("seqpatch", "unet", "litemedsam"):
        assert colour_pixels(shown, COLOURS[m], tol=4).sum() > 50, m
    page.page.screenshot(path=str(shots / "litemedsam.png"))
