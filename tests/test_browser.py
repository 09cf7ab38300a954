"""End to end in a real Chromium: pick an example, click on the object, see the contours and a Dice.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install chromium``); skipped otherwise. Uses the
shipped weights when they exist (a meaningful screenshot), else small random-weight networks. Saves
a full-page screenshot in a temporary folder (``SEQPATCH_SCREENSHOTS`` names another).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import free_port
from scipy import ndimage

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def _synthetic_example(folder: Path) -> list[str]:
    """A CT-like slab with a bright disc and its label, for when examples/ has none."""
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 50) ** 2 + (xx - 44) ** 2 <= 14**2
    arr = np.full((3, 96, 96), -800.0, np.float32)
    arr[:, (yy - 48) ** 2 + (xx - 48) ** 2 <= 40**2] = 20.0
    arr[:, disc] = 180.0
    arr += np.random.default_rng(0).normal(0, 12, arr.shape).astype(np.float32)
    lab = np.zeros(arr.shape, np.uint8)
    lab[:, disc] = 1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 3.0))
    label = sitk.GetImageFromArray(lab)
    label.CopyInformation(img)
    paths = [folder / "synthetic_disc.nii.gz", folder / "synthetic_disc_label.nii.gz"]
    sitk.WriteImage(img, str(paths[0]))
    sitk.WriteImage(label, str(paths[1]))
    return [str(p) for p in paths]


def _predictor():
    from seqpatch_core.inference.predictor import Predictor
    from seqpatch_core.method.models import build_model, load_models

    models = load_models(["seqpatch", "unet"], strict=False)
    small = {"seqpatch": {"widths": (8, 16, 32)}, "unet": {"base": 8}}
    for name, cfg in small.items():
        models.setdefault(name, build_model(name, **cfg))  # random weights: plumbing only
    return Predictor(models, device="cpu", dtype="auto")  # as app.py runs it


def _inner_point(label_path: str) -> tuple[int, int, int]:
    """(z, y, x) of the innermost label voxel on the label's largest slice (where the app opens)."""
    lab = sitk.GetArrayFromImage(sitk.ReadImage(label_path)) != 0
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(axis=1)))
    dist = ndimage.distance_transform_edt(lab[z])
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return z, int(y), int(x)


def test_pick_example_click_and_see_contours(tmp_path, one_thread):
    from playwright.sync_api import expect, sync_playwright

    from app import LAUNCH_KWARGS, build_demo, find_examples, render

    examples = find_examples() or [_synthetic_example(tmp_path)]
    image_path, label_path = examples[0]
    z, y, x = _inner_point(label_path)
    shape_yx = sitk.GetArrayFromImage(sitk.ReadImage(label_path)).shape[1:]
    factor = render.display_factor(shape_yx)

    demo = build_demo(_predictor(), examples=examples)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=60_000)

            label = Path(image_path).name.split(".")[0].replace("_", " ")
            page.locator("#examples").get_by_text(re.compile(label, re.I)).first.click(timeout=60_000)
            expect(page.locator("#summary")).to_contain_text("voxels", timeout=60_000)
            expect(page.locator("#summary")).to_contain_text("Label:", timeout=60_000)

            img = page.locator("#overlay img")
            expect(img).to_be_visible(timeout=30_000)
            page.wait_for_function(
                "([w, h]) => { const i = document.querySelector('#overlay img');"
                " return i && i.complete && i.naturalWidth === w && i.naturalHeight === h; }",
                arg=[shape_yx[1] * factor, shape_yx[0] * factor],
                timeout=30_000,
            )
            before = img.get_attribute("src")
            # Where Gradio's click-to-pixel mapping (object-fit: contain) puts picture pixel (x, y).
            box = img.evaluate(
                "i => { const r = i.getBoundingClientRect();"
                " return [r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight]; }"
            )
            left, top, w, h, nw, nh = box
            scale = max(nw / w, nh / h)
            off_x, off_y = (w - nw / scale) / 2, (h - nh / scale) / 2
            px, py = render.slice_to_display(np.array([y, x], dtype=float), factor)[::-1]
            page.mouse.click(left + off_x + (px + 0.5) / scale, top + off_y + (py + 0.5) / scale)

            metrics = page.locator("#metrics")
            expect(metrics.locator("table")).to_be_visible(timeout=180_000)
            expect(metrics).to_contain_text("SeqPatch")
            expect(metrics).to_contain_text("Dice")
            text = metrics.inner_text()
            assert re.search(r"SeqPatch\s+[01]\.\d{3}", text), text
            assert img.get_attribute("src") != before
            expect(page.locator("#status")).to_contain_text(f"({z}, ")

            shots = Path(os.environ.get("SEQPATCH_SCREENSHOTS", tmp_path))  # never over tracked files
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "full_page.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
