"""A click on nothing (issue 26 item 6): :func:`app.evidence.no_object_reason` on drawn slices."""

from __future__ import annotations

import numpy as np

from app.evidence import MIN_CONTRAST, no_object_reason

YY, XX = np.mgrid[:64, :64]
DISC = (YY - 32) ** 2 + (XX - 32) ** 2 <= 8**2
FULL = np.ones((64, 64), np.float32)


def _reason(image, likelihood, mask, click=(32.0, 32.0), spacing=(1.0, 1.0)):
    return no_object_reason(image, likelihood, FULL, mask, click, 0.5, spacing)


def test_an_object_with_an_edge_is_found():
    image = np.where(DISC, 0.7, 0.2).astype(np.float32)
    assert _reason(image, DISC.astype(np.float32), DISC) is None


def test_a_blob_in_flat_air_is_no_object():
    air = np.full((64, 64), 0.23, np.float32) + np.random.default_rng(0).normal(0, 0.003, (64, 64)).astype(np.float32)
    why = _reason(air, DISC * 0.8, DISC)
    assert why is not None and "no edge" in why


def test_a_large_object_whose_contour_lies_inside_its_edge_is_found():
    """A 40-mm object whose mask stops 4 mm short of its edge: the ring, widened with the mask, still
    reaches the outside (a 1-4 mm ring would lie inside the object and call it no edge)."""
    yy, xx = np.mgrid[:128, :128]
    dist = np.hypot(yy - 64, xx - 64)
    image = np.where(dist <= 40, 0.55, 0.45).astype(np.float32)
    mask = dist <= 36
    full = np.ones((128, 128), np.float32)
    assert no_object_reason(image, mask * 0.9, full, mask, (64.0, 64.0), 0.5, (1.0, 1.0)) is None
    # the same mask in flat tissue is still no object
    flat = np.full((128, 128), 0.5, np.float32)
    why = no_object_reason(flat, mask * 0.9, full, mask, (64.0, 64.0), 0.5, (1.0, 1.0))
    assert why is not None and "no edge" in why


def test_the_contrast_rule_sits_at_its_constant():
    for delta, found in ((2 * MIN_CONTRAST, True), (MIN_CONTRAST / 2, False)):
        image = np.where(DISC, 0.5 + delta, 0.5).astype(np.float32)
        assert (_reason(image, DISC * 0.9, DISC) is None) is found, delta


def test_a_likelihood_below_the_threshold_near_the_click_is_no_object():
    image = np.where(DISC, 0.7, 0.2).astype(np.float32)
    far = ((YY - 10) ** 2 + (XX - 10) ** 2 <= 5**2)  # the only component passing is 30 px away
    why = _reason(image, far * 0.9, far)
    assert why is not None and "below the threshold 0.50 within 3 mm" in why
    # 2 mm from the click on a 1 mm grid is near enough
    assert _reason(image, DISC * 0.9, DISC, click=(32.0, 42.0)) is None


def test_an_empty_mask_is_no_object():
    image = np.where(DISC, 0.7, 0.2).astype(np.float32)
    assert _reason(image, np.zeros((64, 64), np.float32), np.zeros((64, 64), bool)) is not None


def test_a_click_in_air_draws_no_contour_and_says_so(tmp_path):
    """On the page's handlers: a click in flat tissue gives each method no mask and a line saying so; a
    click on the object still gives its contour, and a threshold change judges again."""
    from helpers import BrightNet, write_case

    from app import handlers
    from app.exports import mask_volume
    from seqpatch_core.inference.predictor import Predictor

    pred = Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")
    image, label = write_case(tmp_path)
    s = handlers.load(pred, None, str(image), str(label))["state"]
    z = s.z
    out = handlers.segment(s, z, 32.0, 30.0)  # the sphere of helpers.sphere_arrays
    assert "no object found" not in out["metrics"]
    assert all(r.mask.any() for r in s.results[z].values())
    out = handlers.segment(s, z, 10.0, 55.0)  # flat tissue, darker than mid-window: nothing there
    assert out["metrics"].count("no object found at the click") == len(s.results[z]), out["metrics"]
    assert not any(r.mask.any() for r in s.results[z].values())
    assert not mask_volume(s, "seqpatch")[z].any()  # nothing exported for it either
    handlers.set_threshold(s, 0.3)
    assert not any(r.mask.any() for r in s.results[z].values())
