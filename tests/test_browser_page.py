"""The page as a radiologist expects it (issue 26), in a real Chromium at 1366×768: nothing lost on a
refused upload, examples that open on their label, numbers applied on Enter, a click on nothing said
so, small contours seen, the eye's places (progress, Export, legend, likelihood maps), a quiet
console, the teaching text true to its curves, and the time from a click to both contours.

One server for the module (the shipped weights when present, else small random networks, as in
``test_browser_flows``); every test opens its own page, that is its own session.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import SimpleITK as sitk
import test_browser_flows as flows
from helpers import free_port
from PIL import Image
from test_browser import CHROMIUM
from test_browser_flows import Page, _case

server, browser = flows.server, flows.browser  # the module's fixtures: one server for these tests too

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture()
def page(server, browser):
    url, _ = server
    p = Page(browser, url)
    p.console = []
    p.page.on("console", lambda m: p.console.append((m.type, m.text)))
    yield p
    assert not p.errors, p.errors
    p.close()


def _dice(page: Page, method: str = "SeqPatch") -> str:
    """The Dice cell of ``method`` in the table of the slice shown."""
    m = re.search(rf"{method}\s+([\d.]+|–|n/a[^\t\n]*)", page.page.locator("#metrics table").inner_text())
    assert m, page.page.locator("#metrics").inner_text()
    return m.group(1)


def _box_file(page: Page, elem: str) -> str:
    """The file name an upload box shows ("" when it is empty)."""
    cell = page.page.locator(f"#{elem} td.filename")
    return cell.first.get_attribute("aria-label") if cell.count() else ""


def picture(page: Page, elem: str = "overlay") -> np.ndarray:
    """The picture of output ``elem`` as the page has it (no browser scaling): (h, w, 3) uint8."""
    page.page.wait_for_function(
        f"() => {{ const i = document.querySelector('#{elem} img'); return i && i.complete && i.naturalWidth > 0; }}",
        timeout=30_000,
    )
    src = page.page.locator(f"#{elem} img").get_attribute("src")
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = page.page.request.get(urljoin(page.page.url, src)).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def colour_pixels(pic: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> np.ndarray:
    """(h, w) bool: the pixels of ``pic`` within ``tol`` of ``colour`` in every channel."""
    return (np.abs(pic.astype(int) - np.asarray(colour)) <= tol).all(axis=-1)


def _upload(page: Page, elem: str, path: Path) -> None:
    """Empty the box (×), as a user must before choosing another file, then choose ``path``."""
    page.page.locator(f"#{elem} button[aria-label=Clear]").click()
    page.page.locator(f"#{elem} input[type=file]").set_input_files(str(path))


# ----------------------------------------------------------------------------- item 2


def test_a_refused_replacement_loses_nothing(page, server, tmp_path):
    """Item 2: a text file named .nii.gz, then a label of another geometry, each after emptying its
    box: the image, the label, the results stay, the boxes name what is loaded, the slice answers."""
    from playwright.sync_api import expect

    image, label, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    yx = page.click_slice(y, x, f)
    page.wait_done(z, yx)
    dice = _dice(page)
    assert re.fullmatch(r"\d\.\d{3}", dice), dice

    bad = tmp_path / "bad.nii.gz"
    bad.write_text("this is not an image\n")
    _upload(page, "image-file", bad)
    page.toast("bad.nii.gz")
    expect(page.page.locator("#image-file td.filename")).to_have_attribute(
        "aria-label", Path(image).name, timeout=30_000
    )
    assert _box_file(page, "label-file") == Path(label).name
    expect(page.page.locator("#summary")).to_contain_text(Path(image).name)
    assert _dice(page) == dice and page.point() is not None

    small = tmp_path / "small_label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 5, 5), np.uint8)), str(small))
    _upload(page, "label-file", small)
    page.toast("label not used")
    expect(page.page.locator("#label-file td.filename")).to_have_attribute(
        "aria-label", Path(label).name, timeout=30_000
    )
    assert _dice(page) == dice
    page.assert_not_blanked()
    yx = page.click_slice(y + 2, x, f)  # still loaded and clickable
    page.wait_done(z, yx)
    assert re.fullmatch(r"\d\.\d{3}", _dice(page))


# ----------------------------------------------------------------------------- item 7


def test_each_example_opens_on_its_label(page, server):
    """Item 7: every example opens on its label's largest slice, with the label drawn there."""
    from playwright.sync_api import expect

    from app.drawing import COLOURS

    for image, label in server[1]:
        lab = sitk.GetArrayFromImage(sitk.ReadImage(label)) != 0
        z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(axis=1)))
        page.pick_example(image)
        expect(page.page.locator("#summary")).to_contain_text(Path(image).name, timeout=60_000)
        expect(page.page.locator("#metrics")).to_contain_text(
            f"Ground truth on slice {z}: {int(lab[z].sum())} px (drawn green", timeout=60_000
        )
        if lab.shape[0] > 1:
            assert int(page.page.locator("#slice input[type=number]").input_value()) == z, image
        truth = colour_pixels(picture(page), COLOURS["truth"], tol=40)
        assert truth.sum() > 50, (image, int(truth.sum()))


# ----------------------------------------------------------------------------- item 3


def test_typed_numbers_apply_on_enter(page, server):
    """Item 3: 0.9 typed in Threshold and 400 in W, each with Enter and the focus left in the box,
    change the page."""
    from playwright.sync_api import expect

    image, _, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    page.wait_done(z, page.click_slice(y, x, f))
    box = page.page.locator("#threshold input[type=number]")
    box.fill("0.9")
    box.press("Enter")
    expect(page.page.locator("#metrics")).to_contain_text("threshold 0.90", timeout=15_000)
    assert box.evaluate("b => document.activeElement === b")  # applied without leaving the box
    width = page.page.locator("#width input[type=number]")
    width.fill("400")
    width.press("Enter")
    expect(page.page.locator("#status")).to_contain_text("(W 400,", timeout=15_000)
    assert width.evaluate("b => document.activeElement === b")


# ----------------------------------------------------------------------------- item 6


def test_a_click_in_air_says_no_object_and_draws_none(page, server):
    """Item 6: a click in the air outside the lung2 patient: each method says it found no object,
    and no contour of either is drawn (the legend names none)."""
    from playwright.sync_api import expect
    from scipy import ndimage

    from app.drawing import COLOURS

    image, _, (z, _, _), f, _ = _case(server[1])
    arr = sitk.GetArrayFromImage(sitk.ReadImage(image))[z]
    air = ndimage.binary_erosion(arr <= -950, iterations=8)  # pure air 5 mm around the click
    assert air.any(), "the lung2 crop has air outside the body"
    y, x = np.argwhere(air)[len(np.argwhere(air)) // 2]
    page.pick_example(image)
    page.wait_done(z, page.click_slice(float(y), float(x), f))
    metrics = page.page.locator("#metrics")
    expect(metrics).to_contain_text("SeqPatch: no object found at the click", timeout=30_000)
    expect(metrics).to_contain_text("U-net: no object found at the click")
    pic = picture(page)
    for method in ("seqpatch", "unet"):
        assert colour_pixels(pic, COLOURS[method], tol=6).sum() < 5, method


# ----------------------------------------------------------------------------- item 4


def _small_lesion(folder: Path) -> tuple[Path, tuple[int, int, int]]:
    """A CT-like slab with one 30 mm² lesion (a 3.1 mm radius disc, 0.7 mm pixels); its centre (z, y, x)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :160]
    arr = rng.normal(40, 8, (3, 160, 160))
    arr[:, (yy - 70) ** 2 + (xx - 90) ** 2 <= (3.1 / 0.7) ** 2] = 160
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((0.7, 0.7, 3.0))
    path = folder / "small_lesion.nii.gz"
    sitk.WriteImage(img, str(path))
    return path, (1, 70, 90)


def test_the_contour_of_a_small_object_is_seen(page, tmp_path):
    """Item 4: on a 30 mm² lesion the SeqPatch outline is drawn over the (hollow) marker, and a
    magnified inset shows it again, several times larger."""
    from playwright.sync_api import expect

    from app import render
    from app.drawing import COLOURS

    path, (z, y, x) = _small_lesion(tmp_path)
    page.page.locator("#image-file input[type=file]").set_input_files(str(path))
    expect(page.page.locator("#summary")).to_contain_text(path.name, timeout=60_000)
    f = render.display_factor((160, 160))
    page.page.locator("#slice input[type=number]").fill(str(z))
    page.page.locator("#slice input[type=number]").press("Enter")
    page.wait_done(z, page.click_slice(y, x, f))
    pic = picture(page)
    orange = colour_pixels(pic, COLOURS["seqpatch"], tol=6)
    cy, cx = (int(v) for v in render.slice_to_display(np.array([y, x], float), f))
    reach = int(6 / 0.7 * f)  # 6 mm around the click: the outline itself
    around = orange[cy - reach : cy + reach, cx - reach : cx + reach].sum()
    assert around > 10, "the outline around the click is drawn"
    assert orange.sum() > 3 * around, "the inset shows it again, magnified"


# ----------------------------------------------------------------------------- item 5


def _legend_columns(pic: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int]:
    """(first, last) column of ``colour`` in the picture's top band (where the legend is)."""
    cols = np.flatnonzero(colour_pixels(pic[:40], colour, tol=4).any(axis=0))
    assert cols.size, "the legend is in the top band"
    return int(cols[0]), int(cols[-1])


def test_where_the_eye_is(page, server):
    """Item 5: progress beside the slice and Export above the fold at 1366×768; the legend stays put
    between two clicks either side of the picture's middle; no title under Gradio's label on the
    likelihood maps; their colour-bar numbers at least 11 px on screen."""
    from playwright.sync_api import expect

    from app.drawing import COLOURS, colourbar_labels
    from app.view import LIKELIHOOD_TEXT_PX

    image, _, (z, y, x), f, shape = _case(server[1])
    page.pick_example(image)
    height = flows.VIEWPORT["height"]
    flows.SLOW["s"] = 1.5
    try:
        a = page.click_slice(y, shape[2] / 2 - 4, f)  # left of the picture's middle
        progress = page.page.locator("#progress")
        expect(progress).to_contain_text("SeqPatch running", timeout=30_000)
        box = progress.bounding_box()
        assert box["y"] + box["height"] <= height, box
        slice_box = page.page.locator("#overlay img").bounding_box()
        assert slice_box["x"] - 5 <= box["x"] <= slice_box["x"] + slice_box["width"], (box, slice_box)
        page.wait_done(z, a)
    finally:
        flows.SLOW["s"] = 0.0
    expect(page.page.locator("#progress")).not_to_contain_text("running")
    export = page.page.locator("#export-btn").bounding_box()
    assert export["y"] + export["height"] <= height, export
    # nothing of Gradio's lies over the slice's top-left corner, where the legend is
    assert not any(label.is_visible() for label in page.page.locator("#overlay [data-testid=block-label]").all())
    first = _legend_columns(picture(page), COLOURS["seqpatch"])
    page.wait_done(z, page.click_slice(y, shape[2] / 2 + 4, f))  # right of it
    assert _legend_columns(picture(page), COLOURS["seqpatch"]) == first
    lik = picture(page, "lik-seqpatch")
    assert not colour_pixels(lik[:40, :160], COLOURS["seqpatch"], tol=4).any(), "no title under the label"
    shown = page.page.locator("#lik-seqpatch img").bounding_box()
    natural = page.page.locator("#lik-seqpatch img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert natural == [lik.shape[1], lik.shape[0]]
    fit = min(shown["width"] / natural[0], shown["height"] / natural[1])  # object-fit: contain
    drawn = min(size for _, _, size in colourbar_labels(natural[0], max(1.0, LIKELIHOOD_TEXT_PX / 11)))
    on_screen = drawn * fit
    print(f"colour-bar numbers: {drawn} px drawn, {on_screen:.1f} px on screen")
    assert on_screen >= 11, on_screen


# ----------------------------------------------------------------------------- item 10


def test_uploads_leave_the_console_quiet(page, server):
    """Item 10: uploading an image and its label logs no warning or error in the browser console
    (each upload logged "Method not implemented." twice)."""
    from playwright.sync_api import expect

    image, label, _, _, _ = _case(server[1])
    page.page.wait_for_timeout(1000)
    page.console.clear()
    page.page.locator("#image-file input[type=file]").set_input_files(image)
    expect(page.page.locator("#summary")).to_contain_text(Path(image).name, timeout=60_000)
    page.page.locator("#label-file input[type=file]").set_input_files(label)
    expect(page.page.locator("#summary")).to_contain_text("Label:", timeout=60_000)
    page.page.wait_for_timeout(1500)  # the progress bars close after the upload
    noisy = [(kind, text) for kind, text in page.console if kind in ("warning", "error")]
    assert not noisy, noisy


# ----------------------------------------------------------------------------- item 8


def _claims(fused: np.ndarray, forward: np.ndarray, backward: np.ndarray) -> dict[str, bool]:
    """What the teaching text says of one ray's curves (likelihood at the patch centres, (K,) each)."""
    inside = np.flatnonzero(fused >= 0.5)
    last = int(inside[-1]) if inside.size else 0  # the last patch before the crossing
    return {
        "forward-only follows the fused curve": float(np.abs(forward - fused).mean()) < 0.15,
        "backward-only stays high along the ray": float(backward.min()) >= 0.5,
        "fused above forward-only before the crossing": bool(fused[last] >= forward[last]),
    }


def test_the_teaching_text_matches_the_curves(page, server):
    """Item 8: on lung2, clicked at the tumour's centre, what the text says of the forward-only and
    backward-only curves holds on (nearly) every ray, read as the page reads them."""
    from playwright.sync_api import expect
    from test_browser import _predictor

    from app import handlers
    from app.render_rays import _centre_mean

    predictor = _predictor()
    if "sha256" not in predictor.models["seqpatch"].record:
        pytest.skip("the text describes the shipped weights")
    image, label, (z, y, x), f, _ = _case(server[1])
    page.pick_example(image)
    _, py, px = page.wait_done(z, page.click_slice(y, x, f))
    explain = page.page.locator("#explain")
    for said in ("forward-only* curve follows the fused one", "backward-only* curve stays high",
                 "the fused curve lies above the forward-only one"):  # fmt: skip
        expect(explain).to_contain_text(said.replace("*", ""))
    s = handlers.load(predictor, None, image, label)["state"]
    handlers.segment(s, z, py, px)
    sp = s.results[z]["seqpatch"]
    held = {}
    for ray in range(sp.patches.shape[0]):
        r = s.readouts(sp, ray)
        curves = [_centre_mean(r[k]) for k in ("fused", "forward", "backward")]
        for claim, ok in _claims(*curves).items():
            held[claim] = held.get(claim, 0) + ok
    n = sp.patches.shape[0]
    print(f"rays where each claim holds (of {n}):", held)
    assert all(v >= 0.75 * n for v in held.values()), held


# ----------------------------------------------------------------------------- item 9

#: In the page: for every new slice picture, when it was decoded and how many px of each method's
#: colour it has; and when the last pointer went down on the slice.
_WATCH = """() => {
  window.__views = [];
  const seen = new Set();
  const count = (src) => {
    const im = new Image();
    im.onload = () => {
      const t = performance.now();  // decoded: the pixel count below is the test's own work
      const c = document.createElement("canvas");
      c.width = im.naturalWidth; c.height = im.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(im, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let sp = 0, un = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] === %s && d[i + 1] === %s && d[i + 2] === %s) sp++;
        else if (d[i] === %s && d[i + 1] === %s && d[i + 2] === %s) un++;
      }
      window.__views.push({t, sp, un});
    };
    im.src = src;
  };
  const root = document.querySelector("#overlay");
  root.addEventListener("pointerdown", () => { window.__down = performance.now(); }, true);
  new MutationObserver(() => {
    const i = root.querySelector("img");
    if (i && i.src && !seen.has(i.src)) { seen.add(i.src); count(i.src); }
  }).observe(root, {subtree: true, attributes: true, attributeFilter: ["src"], childList: true});
}"""
#: Picture px of a method's colour that mean its contour is drawn (the legend's swatch has about 60).
_CONTOUR_PX = 150
#: The target, from a click to both contours on the screen, at p50 on two cores.
CLICK_TO_BOTH_MS = 600


@pytest.fixture(scope="module")
def app_server():
    """(url, examples): the demo with the networks on the engine app.py picks (``--engine auto``: the
    fastest compiled path whose masks agree with PyTorch), for the time as a user feels it."""
    from app import LAUNCH_KWARGS, build_demo, find_examples
    from app.session import load_box_model
    from seqpatch_core.inference.predictor import Predictor
    from seqpatch_core.method.models import load_models

    models = load_models(["seqpatch", "unet"], strict=False)
    if set(models) != {"seqpatch", "unet"}:
        pytest.skip("the time is the shipped networks'")
    predictor = Predictor(models, device="cpu", dtype="auto", engine="auto", engine_for=("seqpatch", "unet"))
    demo = build_demo(predictor, examples=find_examples(), box_model=load_box_model())
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS)
    yield f"http://127.0.0.1:{port}/", find_examples()
    demo.close()


#: In the page: when the line beside the slice last stopped saying that SeqPatch runs.
_SETTLED = """() => {
  const el = document.querySelector("#progress");
  new MutationObserver(() => {
    const t = el.innerText;
    if (!t.includes("SeqPatch running")) window.__settled = performance.now();
  }).observe(el, {subtree: true, childList: true, characterData: true});
}"""


def test_click_to_both_contours_time(browser, app_server):
    """Item 9: the time from a click (pointer down on the slice) to the picture with both contours
    decoded in the page, p50 over seven clicks on lung2, with the networks on app.py's engine. Both
    first-grid answers are drawn while the scale rule checks the next grid; the time until that check
    has answered (the line beside the slice no longer says SeqPatch runs) is printed beside it. Held to
    the target when the machine is otherwise idle (a load average above one per core measures the
    neighbours, not the page)."""
    import os

    from playwright.sync_api import expect

    from app.drawing import COLOURS

    page = Page(browser, app_server[0])
    image, _, (z, y, x), f, _ = _case(app_server[1])
    page.pick_example(image)
    page.page.evaluate(_WATCH % (*COLOURS["seqpatch"], *COLOURS["unet"]))
    page.page.evaluate(_SETTLED)
    times, settled = [], []
    offsets = ((0, 0), (3, 0), (0, 3), (-3, 0), (0, -3), (2, 2), (-2, -2), (2, -2))  # each a new picture
    for i, (dy, dx) in enumerate(offsets):
        # the previous click's follow-up (LiteMedSAM, the per-ray pictures) redraws its own contours:
        # wait for it, so that the pictures counted are this click's
        expect(page.page.locator("#progress")).not_to_contain_text("running", timeout=120_000)
        page.page.wait_for_timeout(300)
        page.page.evaluate("window.__views = []; window.__settled = null")
        yx = page.click_slice(y + dy, x + dx, f)
        page.wait_done(z, yx)
        page.page.wait_for_function(
            f"() => window.__views.some(v => v.sp > {_CONTOUR_PX} && v.un > {_CONTOUR_PX})", timeout=30_000
        )
        page.page.wait_for_function("() => window.__settled !== null", timeout=30_000)
        if i == 0:
            continue  # the first click warms the page's caches
        down = page.page.evaluate("window.__down")
        both = page.page.evaluate(f"window.__views.find(v => v.sp > {_CONTOUR_PX} && v.un > {_CONTOUR_PX}).t")
        times.append(both - down)
        settled.append(page.page.evaluate("window.__settled") - down)
    assert not page.errors, page.errors
    page.close()
    p50, p50_settled = float(np.median(times)), float(np.median(settled))
    load = os.getloadavg()[0] / max(1, len(os.sched_getaffinity(0)))
    print(
        f"click to both contours: p50 {p50:.0f} ms, {[round(t) for t in times]} ms; "
        f"to SeqPatch's last grid checked: p50 {p50_settled:.0f} ms, {[round(t) for t in settled]} ms; "
        f"load {load:.1f} per core"
    )
    if load <= 1.0:
        assert p50 <= CLICK_TO_BOTH_MS, (p50, times)
