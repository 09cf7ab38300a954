"""The server-drawn pictures (:mod:`app.render`): glyphs, legends on narrow slices, the colour bar,
the per-ray pictures drawn for the width they are shown at, and contour styles."""

from __future__ import annotations

import numpy as np
import pytest

from app import render, render_rays
from app.drawing import COLOURS, colourbar_labels, font_len, get_font
from app.render_rays import render_ray_detail, render_ray_grid


def _glyph(text: str) -> np.ndarray:
    return np.asarray(get_font(20).getmask(text), dtype=np.uint8)


@pytest.mark.parametrize("char", ["×", "→", "…", "°", "≥", "−", "²"])
def test_labels_have_their_glyphs(char):
    missing = _glyph("\ue000")  # a private-use code point: no font draws it, so this is the box
    assert _glyph(char).shape != missing.shape or not np.array_equal(_glyph(char), missing)


def _narrow(click_yx=(1.0, 1.0)):
    shape = (120, 45)  # rows × columns: a narrow slice, drawn 4× (180 × 480 px)
    f = render.display_factor(shape)
    mask = np.zeros(shape, bool)
    mask[40:80, 10:35] = True
    contours = [render.Contour("seqpatch", mask), render.Contour("unet", mask),
                render.Contour("truth", mask, dashed=True, fill=False)]  # fmt: skip
    base = render.grey_rgb(np.full(shape, 0.5, np.float32), f)
    return render.render_overlay(base, f, contours, point_yx=click_yx), f


@pytest.mark.parametrize("click", [(1.0, 1.0), (1.0, 43.0), (60.0, 22.0)], ids=["top-left", "top-right", "middle"])
def test_the_legend_is_small_on_narrow_slices_and_never_hides_the_click(click):
    img, f = _narrow(click)
    entries = [(n, COLOURS["seqpatch"], "solid") for n in ("SeqPatch", "U-net", "ground truth")]
    w, h, _ = render.legend_size(entries, img.shape[1])
    assert w * h <= 0.2 * img.shape[0] * img.shape[1]
    y, x = render.slice_to_display(np.array(click), f)
    r = 12
    near = img[max(0, int(y) - r) : int(y) + r, max(0, int(x) - r) : int(x) + r]
    assert np.all(near == COLOURS["marker"], axis=-1).any()  # the marker is drawn, not covered


@pytest.mark.parametrize("width", [60, 90, 180, 320, 560, 1200])
def test_colour_bar_labels_never_overlap(width):
    scale = max(1.0, width / 560)
    boxes = sorted(b for _, b, _ in colourbar_labels(width, scale))
    assert len(boxes) >= 2
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert a[2] <= b[0], boxes


def test_ray_grid_is_drawn_for_its_width():
    rng = np.random.default_rng(0)
    p = rng.random((16, 15, 32, 32)).astype(np.float32)
    grid = render_ray_grid(p, p, width=640)
    assert abs(grid.shape[1] - 640) <= 40 and grid.shape[0] < 900
    assert render_ray_grid(p, p).shape[1] > 2000  # the default: 64-px patches


@pytest.mark.parametrize("readouts", [True, False])
def test_one_ray_large(readouts):
    rng = np.random.default_rng(1)
    k = 15
    p = rng.random((k, 32, 32)).astype(np.float32)
    extra = {"forward": p, "backward": 1 - p} if readouts else {}
    img = render_ray_detail(p, p, ray=3, n_rays=16, inside=np.arange(k) < 5, width=720, **extra)
    assert img.shape[1] == 720 and img.dtype == np.uint8
    other = render_ray_detail(p, p, ray=3, n_rays=16, width=720)
    assert (img.shape[0] > other.shape[0]) == readouts  # two more rows with the readouts


def test_dotted_contours_differ_from_solid_and_dashed():
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    base = render.grey_rgb(np.zeros((40, 40), np.float32), 4)
    colour = COLOURS["seqpatch"]
    counts = {}
    for style in ("solid", "dashed", "dotted"):
        c = render.Contour("seqpatch", m, fill=False, dashed=style == "dashed", dotted=style == "dotted",
                           label="SeqPatch 3D")  # fmt: skip
        img = render.render_overlay(base, 4, [c])
        counts[style] = int(np.all(img == colour, axis=-1).sum())
    assert counts["solid"] > counts["dashed"] > counts["dotted"] > 0


@pytest.mark.parametrize("width", [120, 200, 333, 720, 1400])
@pytest.mark.parametrize("k", [1, 2, 15, 30, 40])
def test_one_ray_large_fits_any_width_and_k(width, k):
    rng = np.random.default_rng(k)
    p = rng.random((k, 16, 16)).astype(np.float32)
    img = render_ray_detail(p, p, ray=15, n_rays=16, inside=np.arange(k) < 3, forward=p, backward=p,
                                   width=width)  # fmt: skip
    assert img.shape[1] == width and img.dtype == np.uint8 and img.shape[0] < 800
    assert np.all(img == COLOURS["seqpatch"], axis=-1).any()  # the frames of the inside patches
    names = ["input patch", "fused (both memories)", "forward memory only", "backward memory only"]
    lay = render_rays.detail_layout(width, k, names)
    assert lay.ps >= 1 and lay.left >= 0 and lay.x(k - 1) + lay.ps <= width  # every tile on the picture
    assert (lay.ps + lay.pad) * lay.tick_every >= font_len(str(k - 1), max(6, lay.font - 2))  # ticks apart


def test_one_ray_large_is_drawn_at_least_its_minimum_width():
    p = np.zeros((15, 16, 16), np.float32)
    assert render_ray_detail(p, p, ray=0, n_rays=16, width=60).shape[1] == render_rays.MIN_DETAIL_WIDTH


_CORNERS = {"top-left": (0.0, 0.0), "top-right": (0.0, 1.0), "bottom-left": (1.0, 0.0), "bottom-right": (1.0, 1.0)}


@pytest.mark.parametrize("shape", [(64, 200), (200, 64)], ids=["wide", "tall"])
@pytest.mark.parametrize("corner", list(_CORNERS), ids=list(_CORNERS))
def test_the_caption_never_hides_the_click(shape, corner):
    f = render.display_factor(shape)
    cy, cx = _CORNERS[corner]
    click = (cy * (shape[0] - 1), cx * (shape[1] - 1))
    mask = np.zeros(shape, bool)
    mask[20:40, 20:40] = True
    contours = [render.Contour("seqpatch", mask), render.Contour("truth", mask, dashed=True, fill=False)]
    caption = "slice 12/40  W 400 L 40 (auto)"
    size_wh = (shape[1] * f, shape[0] * f)
    lay = render.overlay_layout(size_wh, f, contours, click, caption)
    (x0, y0, x1, y1), _ = lay["caption"]
    y, x = lay["marker"]
    reach = 2 * lay["marker_r"]  # the marker's cross reaches twice its radius
    assert not (x0 - reach <= x <= x1 + reach and y0 - reach <= y <= y1 + reach), (lay["caption"], (y, x))
    assert 0 <= x0 and x1 <= size_wh[0] and 0 <= y0 and y1 <= size_wh[1]
    lx0, ly0, lx1, ly1 = lay["legend"][0]
    assert x1 <= lx0 or lx1 <= x0 or y1 <= ly0 or ly1 <= y0  # nor the legend
    base = render.grey_rgb(np.full(shape, 0.5, np.float32), f)
    img = render.render_overlay(base, f, contours, point_yx=click, caption=caption)
    r = 12
    near = img[max(0, int(y) - r) : int(y) + r, max(0, int(x) - r) : int(x) + r]
    assert np.all(near == COLOURS["marker"], axis=-1).any()  # the marker is drawn, not covered
    box = img[y0:y1, x0:x1]
    assert (box.max(axis=-1) > 200).any() and box.mean() < base.mean()  # the shaded caption is there


def test_the_caption_stays_bottom_left_when_the_click_is_elsewhere():
    lay = render.overlay_layout((600, 192), 3, [], (30.0, 100.0), "slice 1/2")
    (x0, _, _, y1), _ = lay["caption"]
    assert x0 == 2 and y1 == 192 - 2
