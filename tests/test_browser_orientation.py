"""Images the right way up, in a real Chromium at 1366×768: the brain examples (stored LAS) show the
face at the top, and one phantom head uploaded as LPS, RAS and with its in-plane axes exchanged is the
same picture each time, not mirrored, and a click on it lands on the same physical point.

The expected pictures come from SimpleITK's DICOMOrient (the volume resampled to LPS storage, whose
axial slices are anterior-up and patient's-right-left as stored), not from the app's own mapping.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import test_browser_flows as flows
from test_browser import CHROMIUM
from test_browser_flows import Page
from test_browser_page import picture

from seqpatch_core.base.paths import SHARED_DATA_DIR

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

# The demo with its examples and Chromium once per module, and a page per test, as the flow tests
# have them.
server = flows.server
browser = flows.browser
page = flows.page

REAL_BRAIN = SHARED_DATA_DIR / "real" / "brain1_image.nrrd"


def _load_file(page: Page, path: Path) -> None:
    """Choose ``path`` as the image, as a user does (emptying the box first when it holds a file),
    and wait until it is loaded (the summary and the slice come in one answer; the slice picture of
    another file can be the same, so it is not waited for)."""
    from playwright.sync_api import expect

    clear = page.page.locator("#image-file button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.page.locator("#image-file input[type=file]").set_input_files(str(path))
    expect(page.page.locator("#summary")).to_contain_text(path.name, timeout=60_000)


def _click_picture(page: Page, row: float, col: float) -> None:
    """Click picture pixel (row, col) of the slice. The picture is drawn as CSS object-fit says: a
    picture smaller than its box is not enlarged under "scale-down" (it stays centred at its own size)."""
    img = page.page.locator("#overlay img")
    img.scroll_into_view_if_needed()
    left, top, w, h, nw, nh, fit = img.evaluate(
        "i => { const r = i.getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight, getComputedStyle(i).objectFit]; }"
    )
    scale = max(nw / w, nh / h)
    if fit in ("scale-down", "none"):
        scale = max(scale, 1.0)
    off_x, off_y = (w - nw / scale) / 2, (h - nh / scale) / 2
    page.page.mouse.click(left + off_x + (col + 0.5) / scale, top + off_y + (row + 0.5) / scale)


def _grey(picture: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """The picture brought back to one value per slice pixel (it is enlarged by a whole factor)."""
    f = picture.shape[0] // shape_yx[0]
    assert picture.shape[:2] == (shape_yx[0] * f, shape_yx[1] * f), (picture.shape, shape_yx)
    return picture.astype(np.float64).mean(axis=2)[f // 2 :: f, f // 2 :: f]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _best_match(shown: np.ndarray, lps: np.ndarray) -> tuple[float, float, float]:
    """(correlation with the best-matching LPS axial slice as stored, with that slice upside down,
    with it mirrored left-right)."""
    scores = []
    for sl in lps:
        if sl.shape != shown.shape or np.ptp(sl) == 0:
            continue
        scores.append((_corr(shown, sl), _corr(shown, sl[::-1]), _corr(shown, sl[:, ::-1])))
    assert scores, "no slice of the shown size"
    return max(scores)


def _expect_radiological(shown_rgb: np.ndarray, image_path: Path) -> None:
    """The shown slice is an axial slice of the image in LPS storage: anterior up, right on the left."""
    lps = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(image_path)), "LPS")).astype(np.float64)
    lo, hi = np.percentile(lps, (1, 99))
    lps = np.clip(lps, lo, hi)  # about what a window does; correlation ignores the rest
    shown = _grey(shown_rgb, lps.shape[1:])
    right, upside_down, mirrored = _best_match(shown, lps)
    assert right > 0.8, right
    assert right > upside_down + 0.1 and right > mirrored + 0.1, (right, upside_down, mirrored)


def test_brain_examples_show_the_face_at_the_top(page, server, tmp_path):
    """brain1 is stored LAS (rows run posterior → anterior): drawn as stored its face is at the bottom."""
    from playwright.sync_api import expect

    image_path = next(Path(e[0]) for e in server[1] if "brain1" in e[0])
    assert (
        sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(sitk.ReadImage(str(image_path)).GetDirection())
        == "LAS"
    )
    page.pick_example(str(image_path))
    expect(page.page.locator("#slice")).to_contain_text("Axial slice")  # the plane scrolled, named
    _expect_radiological(picture(page), image_path)
    if REAL_BRAIN.is_file():  # the whole case, uploaded as a user would
        _load_file(page, REAL_BRAIN)
        _expect_radiological(picture(page), REAL_BRAIN)


def _phantom(tmp_path: Path) -> tuple[dict[str, Path], tuple[float, float, float]]:
    """One MR-like head phantom (an ellipse, a bright marker at the patient's right front, a smaller
    one at the left back) written as LPS, PLS (x and y exchanged) and RAS NIfTI files; and the
    marker's physical point (x, y, z) in mm, LPS."""
    nz, ny, nx = 5, 96, 80
    zz, yy, xx = np.mgrid[:nz, :ny, :nx].astype(np.float64)
    arr = np.where(((yy - 48) / 44) ** 2 + ((xx - 40) / 36) ** 2 <= 1.0, 100.0, 5.0)
    marker = (yy - 22) ** 2 + (xx - 22) ** 2 <= 7**2  # low x = right, low y = anterior in LPS storage
    arr[marker] = 400.0
    arr[(yy - 74) ** 2 + (xx - 60) ** 2 <= 4**2] = 250.0
    arr += np.random.default_rng(0).normal(0, 2, arr.shape)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing((1.0, 1.0, 4.0))
    img.SetOrigin((-40.0, -48.0, 10.0))
    paths = {}
    for code in ("LPS", "PLS", "RAS"):  # RAS last: the page the click goes to
        paths[code] = tmp_path / f"head_{code}.nii.gz"
        sitk.WriteImage(sitk.DICOMOrient(img, code), str(paths[code]))
    return paths, img.TransformIndexToPhysicalPoint((22, 22, 2))


def test_a_ras_volume_is_not_mirrored(page, server, tmp_path):
    """The same head stored LPS, RAS and with x and y exchanged: the same picture each time, its
    marker (patient's right front) at the screen's upper left; a click on the marker names its point."""
    paths, marker_mm = _phantom(tmp_path)
    pictures = {}
    for code, path in paths.items():
        _load_file(page, path)
        pictures[code] = picture(page)
        _expect_radiological(pictures[code], path)
    np.testing.assert_array_equal(pictures["RAS"], pictures["LPS"])
    np.testing.assert_array_equal(pictures["PLS"], pictures["LPS"])
    # The marker, at LPS voxel (y, x) = (22, 22) of 96 × 80, is at that slice pixel on screen (upper
    # left); mirrored or upside down, the same pixel would be the body's plain grey.
    grey = pictures["RAS"].astype(np.float64).mean(axis=2)
    f = grey.shape[0] // 96
    at = int((22 + 0.5) * f)
    assert grey[at, at] > grey[at, int((80 - 1 - 22 + 0.5) * f)] + 60, "mirrored left-right"
    assert grey[at, at] > grey[int((96 - 1 - 22 + 0.5) * f), at] + 60, "upside down"
    # Click the marker's centre on the RAS page: the status line names its physical point.
    _click_picture(page, at, at)
    end = time.monotonic() + 120
    point = r"Point .* voxels = \((-?[\d.]+), (-?[\d.]+), (-?[\d.]+)\) mm"
    while not (m := re.search(point, page.status())) or "running" in page.status():
        assert time.monotonic() < end, page.status()
        time.sleep(0.2)
    clicked = np.array([float(g) for g in m.groups()])
    assert np.abs(clicked[:2] - np.array(marker_mm[:2])).max() <= 1.5, (clicked, marker_mm)
