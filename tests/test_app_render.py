"""What the eye needs on the slice (issue 26 items 4 and 5): small contours over a thin marker, a
magnified inset around a small answer, and a legend that stays put between neighbouring clicks."""

from __future__ import annotations

import numpy as np
import pytest

from app import render
from app.drawing import COLOURS

SHAPE = (120, 160)
F = render.display_factor(SHAPE)
YY, XX = np.mgrid[: SHAPE[0], : SHAPE[1]]


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r**2


def _orange(img: np.ndarray) -> np.ndarray:
    return np.all(img == COLOURS["seqpatch"], axis=-1)


@pytest.mark.parametrize("radius", [2.0, 3.0, 5.0])
def test_a_small_contour_is_drawn_over_the_marker(radius):
    mask = _disc(60, 80, radius)
    base = render.grey_rgb(np.full(SHAPE, 0.4, np.float32), F)
    img = render.render_overlay(base, F, [render.Contour("seqpatch", mask)], opacity=0.0, point_yx=(60, 80))
    up = np.repeat(np.repeat(mask, F, axis=0), F, axis=1)
    plain = render.render_overlay(base, F, [render.Contour("seqpatch", mask)], opacity=0.0)
    edge = _orange(plain) & up  # the outline as drawn without a click
    assert edge.sum() > 10
    assert _orange(img)[edge].all(), f"{int((~_orange(img)[edge]).sum())} outline px hidden by the marker"
    near = img[60 * F - 30 : 60 * F + 30, 80 * F - 30 : 80 * F + 30]
    assert np.all(near == COLOURS["marker"], axis=-1).any()  # the marker is still there


def test_a_small_answer_gets_a_magnified_inset():
    small = [render.Contour("seqpatch", _disc(40, 50, 3.0))]
    wh = (SHAPE[1] * F, SHAPE[0] * F)
    boxes = render.inset_boxes(wh, F, small, render.slice_to_display(np.array([40.0, 50.0]), F))
    assert boxes is not None
    (sx0, sy0, sx1, sy1), (tx0, ty0, tx1, ty1) = boxes
    assert sx0 <= 50 * F <= sx1 and sy0 <= 40 * F <= sy1  # around the click
    assert tx1 - tx0 > 2 * (sx1 - sx0) and tx0 > wh[0] / 2  # larger, on the side away from the click
    base = render.grey_rgb(np.full(SHAPE, 0.4, np.float32), F)
    img = render.render_overlay(base, F, small, opacity=0.0, point_yx=(40, 50), inset=True)
    assert _orange(img[ty0:ty1, tx0:tx1]).sum() > 4 * _orange(img[sy0:sy1, sx0:sx1]).sum()
    large = [render.Contour("seqpatch", _disc(60, 80, 30.0))]
    assert render.inset_boxes(wh, F, large, (60.0 * F, 80.0 * F)) is None  # seen well as it is


def test_the_legend_stays_put_between_neighbouring_clicks():
    contours = [render.Contour("seqpatch", _disc(60, 80, 10)), render.Contour("unet", _disc(60, 80, 11))]
    wh = (SHAPE[1] * F, SHAPE[0] * F)
    boxes = set()
    for cy in np.linspace(40, 80, 9):  # across the middle of the picture, where the farthest corner flips
        for cx in np.linspace(60, 100, 9):
            boxes.add(render.overlay_layout(wh, F, contours, (cy, cx), "slice 3/9")["legend"][0])
    assert len(boxes) == 1, boxes
    under = render.overlay_layout(wh, F, contours, (3.0, 3.0), "slice 3/9")["legend"][0]
    assert under not in boxes  # a click under the legend moves it


def test_the_per_ray_curves_have_a_y_scale():
    """Item 5: the plot of the likelihood along the ray names 1 at its top, left of its frame."""
    from app.render_rays import detail_layout, render_ray_detail

    k, width = 12, 720
    p = np.full((k, 16, 16), 0.5, np.float32)
    img = render_ray_detail(p, p, ray=0, n_rays=16, forward=p, backward=p, width=width)
    names = ["input patch", "fused (both memories)", "forward memory only", "backward memory only"]
    lay = detail_layout(width, k, names)
    assert not lay.label_above
    top = lay.font + 18
    py0 = top + len(names) * (lay.ps + 4) + 2 + lay.font + 8  # the plot's top edge (render_ray_detail)
    band = img[py0 - 2 : py0 + lay.font + 4, lay.left - 30 : lay.left - 4]
    assert np.all(np.abs(band.astype(int) - 200) <= 30, axis=-1).sum() > 5  # the "1" beside the top
