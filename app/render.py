"""Pictures for the demo, numpy and PIL only (no Gradio): every function returns an RGB uint8 array.

Coordinates: slices and masks are (y, x) arrays; points are (y, x) slice pixels (floats allowed).
Slices are shown enlarged by an integer ``factor`` (:func:`display_factor`) so that small crops stay
readable and contours stay crisp; :func:`display_to_slice` maps a click on the shown picture back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from app.drawing import (
    COLOURS,
    NAMES,
    colour_table,
    draw_colourbar,
    fit_font,
    font_len,
    get_font,
    outlined_text,
    ray_colour,
)

__all__ = [
    "Contour",
    "caption_box",
    "display_factor",
    "display_to_slice",
    "edge_letters",
    "grey_rgb",
    "inset_boxes",
    "legend_box",
    "legend_size",
    "overlay_layout",
    "placeholder",
    "plane_size",
    "render_likelihood",
    "render_overlay",
    "render_plane",
    "slice_to_display",
]

_TARGET_PX = 512  # slices are enlarged until their longer side reaches about this
_MAX_FACTOR = 4


def display_factor(shape_yx: Sequence[int]) -> int:
    """Integer enlargement for a slice of ``shape_yx`` (1 for 512×512, up to 4 for small crops)."""
    longest = max(int(shape_yx[0]), int(shape_yx[1]), 1)
    return int(min(_MAX_FACTOR, max(1, math.ceil(_TARGET_PX / longest))))


def display_to_slice(xy_display: Sequence[float], factor: int, shape_yx: Sequence[int]) -> tuple[float, float]:
    """A picture pixel ``[x, y]`` (Gradio's ``SelectData.index`` order) → slice point (y, x), clamped.

    Picture pixel ``i`` covers slice pixels ``[i / f - 0.5, (i + 1) / f - 0.5]``; its centre is taken.
    """
    x, y = float(xy_display[0]), float(xy_display[1])
    h, w = int(shape_yx[0]), int(shape_yx[1])
    sy = (y + 0.5) / factor - 0.5
    sx = (x + 0.5) / factor - 0.5
    return float(np.clip(sy, 0, h - 1)), float(np.clip(sx, 0, w - 1))


def slice_to_display(points_yx: np.ndarray, factor: int) -> np.ndarray:
    """(..., 2) slice points (y, x) → picture points (y, x), pixel centres matched."""
    return (np.asarray(points_yx, dtype=np.float64) + 0.5) * factor - 0.5


def _enlarge(a: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return a
    return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)


def grey_rgb(windowed: np.ndarray, factor: int = 1) -> np.ndarray:
    """A windowed slice in [0, 1] (y, x) → enlarged RGB uint8 (y·f, x·f, 3)."""
    g = (np.clip(windowed, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    g = _enlarge(g, factor)
    return np.repeat(g[..., None], 3, axis=2)


@dataclass(frozen=True)
class Contour:
    """One mask to outline: ``key`` picks the colour and legend name ("seqpatch", "unet", "truth").

    label: the legend text instead of the key's name (e.g. "SeqPatch 3D"); dashed: long dashes (the
    ground truth); dotted: short dots (a whole object followed in 3D).
    """

    key: str
    mask: np.ndarray
    dashed: bool = False
    fill: bool = True
    label: str | None = None
    dotted: bool = False

    @property
    def style(self) -> str:
        return "dotted" if self.dotted else "dashed" if self.dashed else "solid"

    @property
    def name(self) -> str:
        return self.label or NAMES.get(self.key, self.key)


def _broken(edge: np.ndarray, style: str, unit: int) -> np.ndarray:
    """An outline drawn dashed (long dashes, short gaps) or dotted (short dots) instead of solid."""
    if style == "solid":
        return edge
    yy, xx = np.nonzero(edge)
    if style == "dashed":
        keep = ((yy + xx) // (3 * unit)) % 3 != 2
    else:
        keep = ((yy + xx) // max(1, unit)) % 3 == 0
    out = np.zeros_like(edge)
    out[yy[keep], xx[keep]] = True
    return out


def _edge(mask_up: np.ndarray, width: int) -> np.ndarray:
    if not mask_up.any():
        return mask_up
    inner = ndimage.binary_erosion(mask_up, iterations=width, border_value=0)
    return mask_up & ~inner


def legend_size(entries: Sequence[tuple[str, tuple[int, int, int], str]], picture_width: int) -> tuple[int, int, int]:
    """(width, height, font size) of the legend box on a picture ``picture_width`` px wide: the font
    shrinks on narrow pictures so the box never spans more than about half of the width."""
    size = max(11, int(round(13 * max(1.0, picture_width / 560))))
    while True:
        swatch = 3 * size // 2
        width = max(int(get_font(size).getlength(name)) for name, _, _ in entries) + swatch + 22
        if width <= picture_width * 0.5 or size <= 8:
            return width, (size + 6) * len(entries) + 8, size
        size -= 1


def legend_box(
    entries: Sequence[tuple[str, tuple[int, int, int], str]],
    picture_wh: Sequence[int],
    avoid_yx: Sequence[float] | None = None,
    reach: float = 0.0,
) -> tuple[tuple[int, int, int, int], int]:
    """The legend's box (x0, y0, x1, y1) and font size: top left, or top right when the click marker
    ``avoid_yx`` (picture px, with its ``reach``) lies under the top-left box. Neighbouring clicks
    leave it where it was: it moves only for a click under it, never to the corner farthest away."""
    width, height, size = legend_size(entries, int(picture_wh[0]))
    x, y = 6, 6
    if _near((x, y, x + width, y + height), avoid_yx, reach):
        x = max(0, int(picture_wh[0]) - width - 6)
    return (x, y, x + width, y + height), size


def _near(box: Sequence[float], yx: Sequence[float] | None, reach: float) -> bool:
    """Whether the point ``yx`` (picture px) lies in ``box`` (x0, y0, x1, y1) grown by ``reach``."""
    if yx is None:
        return False
    y, x = float(yx[0]), float(yx[1])
    return box[0] - reach <= x <= box[2] + reach and box[1] - reach <= y <= box[3] + reach


def _overlap(a: Sequence[float], b: Sequence[float] | None) -> bool:
    return b is not None and not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def caption_box(
    caption: str,
    picture_wh: Sequence[int],
    scale: float = 1.0,
    avoid_yx: Sequence[float] | None = None,
    reach: float = 0.0,
    taken: Sequence[float] | None = None,
    also: Sequence[Sequence[float]] = (),
) -> tuple[tuple[int, int, int, int], int]:
    """The caption line's box (x0, y0, x1, y1) and font size on a picture ``picture_wh`` (w, h) px.
    ``also``: more boxes to keep clear of, as ``taken`` (the magnified inset).

    The font shrinks (to 8 px) until the line fits the width. The box goes bottom-left unless the click
    ``avoid_yx`` (picture px, with the marker's ``reach``) or the legend box ``taken`` is there; then
    bottom-right, top-left, top-right or under the legend, whichever is first free of both; failing
    that, the first clear of the click; failing that, the one farthest from it.
    """
    pw, ph = int(picture_wh[0]), int(picture_wh[1])
    size = fit_font(caption, int(12 * scale), pw - 16, smallest=8)
    w, h = int(font_len(caption, size)) + 12, size + 10
    xs = (2, max(2, pw - w - 2))
    spots = [(xs[0], ph - h - 2), (xs[1], ph - h - 2), (xs[0], 2), (xs[1], 2)]
    if taken is not None and taken[3] + 4 + h <= ph:
        spots += [(xs[0], int(taken[3]) + 4), (xs[1], int(taken[3]) + 4)]
    boxes = [(x, y, x + w, y + h) for x, y in spots]
    clear = [b for b in boxes if not _near(b, avoid_yx, reach)]
    free = [b for b in clear if not _overlap(b, taken) and not any(_overlap(b, o) for o in also)]
    if clear:
        return (free or clear)[0], size
    ay, ax = float(avoid_yx[0]), float(avoid_yx[1])  # every spot is near the click (a tiny picture)
    return max(boxes, key=lambda b: math.hypot((b[0] + b[2]) / 2 - ax, (b[1] + b[3]) / 2 - ay)), size


#: A magnified inset of the click's surroundings is drawn when the methods' contours span fewer
#: picture px than this: a small lesion's outline is then a few px across.
INSET_BELOW_PX = 96
#: The inset's magnification, and its largest side as a share of the picture's width.
INSET_ZOOM = 3
INSET_MAX_SHARE = 0.36


def inset_boxes(
    picture_wh: Sequence[int], factor: int, contours: Sequence[Contour], marker_yx: Sequence[float] | None
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """(source, target) boxes (x0, y0, x1, y1) of the magnified inset, or None when not needed.

    Source: a square around the solid (method) contours and the click, in picture px; target: the same
    square :data:`INSET_ZOOM` times larger in the bottom corner away from the click. None without a
    click, without a solid contour, or when the contours already span :data:`INSET_BELOW_PX` px."""
    masks = [np.asarray(c.mask, dtype=bool) for c in contours if c.style == "solid" and np.any(c.mask)]
    if marker_yx is None or not masks:
        return None
    ys, xs = np.nonzero(np.logical_or.reduce(masks))
    y0, y1 = ys.min() * factor, (ys.max() + 1) * factor
    x0, x1 = xs.min() * factor, (xs.max() + 1) * factor
    span = max(y1 - y0, x1 - x0)
    if span >= INSET_BELOW_PX:
        return None
    pw, ph = int(picture_wh[0]), int(picture_wh[1])
    side = int(min(max(1.6 * span, 40), pw, ph))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    sx0 = int(np.clip(round(cx - side / 2), 0, pw - side))
    sy0 = int(np.clip(round(cy - side / 2), 0, ph - side))
    big = int(min(side * INSET_ZOOM, pw * INSET_MAX_SHARE, ph * INSET_MAX_SHARE))
    left = float(marker_yx[1]) > pw / 2  # the bottom corner on the other side of the click
    tx0 = 6 if left else pw - big - 6
    ty0 = ph - big - 6
    return (sx0, sy0, sx0 + side, sy0 + side), (tx0, ty0, tx0 + big, ty0 + big)


def overlay_layout(
    picture_wh: Sequence[int],
    factor: int,
    contours: Sequence[Contour] = (),
    point_yx: Sequence[float] | None = None,
    caption: str | None = None,
    inset: bool = False,
) -> dict:
    """Where :func:`render_overlay` puts its marker, legend, inset and caption on a picture
    ``picture_wh`` (w, h): ``{"scale", "marker": (y, x) picture px or None, "marker_r", "legend": (box,
    font size) or None, "inset": (source box, target box) or None, "caption": (box, font size) or None}``;
    boxes are (x0, y0, x1, y1). The legend stays top left unless the click is under it
    (:func:`legend_box`); the inset (when ``inset`` and :func:`inset_boxes` wants one) takes the bottom
    corner away from the click; the caption a corner free of all (:func:`caption_box`)."""
    scale = max(1.0, int(picture_wh[0]) / 560)
    marker = None if point_yx is None else slice_to_display(np.asarray(point_yx, dtype=np.float64), factor)
    r = 5 * scale
    entries = [(c.name, COLOURS[c.key], c.style) for c in contours]
    legend = legend_box(entries, picture_wh, marker, 2 * r + 3) if entries else None
    boxes = inset_boxes(picture_wh, factor, contours, marker) if inset else None
    cap = None
    if caption:
        also = (boxes[1],) if boxes else ()
        cap = caption_box(caption, picture_wh, scale, marker, 2 * r + 3, legend[0] if legend else None, also)
    return {"scale": scale, "marker": marker, "marker_r": r, "legend": legend, "inset": boxes, "caption": cap}


def _legend(
    img: Image.Image,
    entries: list[tuple[str, tuple[int, int, int], str]],
    box: Sequence[int],
    size: int,
) -> None:
    """A legend box at ``box`` (:func:`legend_box`), (name, colour, style) per line."""
    x, y, x1, y1 = box
    line = size + 6
    swatch = 3 * size // 2
    font = get_font(size)
    shade = Image.new("RGBA", (x1 - x, y1 - y), (0, 0, 0, 170))
    img.paste(shade, (x, y), shade)
    draw = ImageDraw.Draw(img)
    for i, (name, colour, style) in enumerate(entries):
        yy = y + 4 + i * line + line // 2
        x0 = x + 7
        step = {"dashed": 6, "dotted": 4}.get(style)
        if step:
            dash = 3 if style == "dashed" else 1
            for s in range(0, swatch, step):
                draw.line([(x0 + s, yy), (x0 + min(s + dash, swatch), yy)], fill=colour, width=3)
        else:
            draw.line([(x0, yy), (x0 + swatch, yy)], fill=colour, width=3)
        draw.text((x0 + swatch + 6, yy - size // 2 - 1), name, font=font, fill=(255, 255, 255))


def _corner(
    draw: ImageDraw.ImageDraw, yx: Sequence[float], hint: str, factor: int, scale: float, picture_wh: Sequence[int]
) -> tuple[tuple[float, float], str, tuple[int, int, int]]:
    """Draws a box's first corner, slice pixel ``yx`` of the picture as shown, as a cross with a dark
    rim round that pixel; returns the hint's label (top-left xy, text, colour), placed below-right of
    the cross, or on its other side where it would leave the picture."""
    y, x = slice_to_display(np.asarray(yx, dtype=np.float64), factor)
    arm = 7 * scale
    for width, colour in ((4, (0, 0, 0, 255)), (2, (*COLOURS["litemedsam"], 255))):
        draw.line([(x - arm, y), (x + arm, y)], fill=colour, width=width)
        draw.line([(x, y - arm), (x, y + arm)], fill=colour, width=width)
    size = int(11 * scale)
    w, h = font_len(hint, size), size + 4
    tx = x + arm + 3 if x + arm + 3 + w <= picture_wh[0] else max(0.0, x - arm - 3 - w)
    ty = y + arm if y + arm + h <= picture_wh[1] else max(0.0, y - arm - h)
    return (tx, ty), hint, COLOURS["litemedsam"]


def _marker(draw: ImageDraw.ImageDraw, yx_display: Sequence[float], r: float) -> None:
    """The click: a hollow 1-px ring of radius ``r`` and four ticks outside it (to ``2 r``), with a dark
    rim; the centre stays open, so a small contour drawn over it is seen."""
    y, x = float(yx_display[0]), float(yx_display[1])
    col = COLOURS["marker"]
    for width, colour in ((3, (0, 0, 0)), (1, col)):
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=width)
        draw.line([(x - 2 * r, y), (x - r * 1.3, y)], fill=colour, width=width)
        draw.line([(x + r * 1.3, y), (x + 2 * r, y)], fill=colour, width=width)
        draw.line([(x, y - 2 * r), (x, y - r * 1.3)], fill=colour, width=width)
        draw.line([(x, y + r * 1.3), (x, y + 2 * r)], fill=colour, width=width)


def render_overlay(
    base_rgb: np.ndarray,
    factor: int,
    contours: Sequence[Contour] = (),
    *,
    opacity: float = 0.3,
    point_yx: Sequence[float] | None = None,
    ray_centres: np.ndarray | None = None,
    fov_corners: np.ndarray | None = None,
    caption: str | None = None,
    letters: Sequence[str] | None = None,
    inset: bool = False,
    prompt_box: tuple[Sequence[float], str] | None = None,
    corner: tuple[Sequence[float], str] | None = None,
) -> np.ndarray:
    """The slice with filled, outlined masks, the click marker (under the outlines), optional rays, a
    legend and, with ``inset``, a magnified inset around a small answer (:func:`inset_boxes`).

    prompt_box: ((y0, x0, y1, x1) slice px of the picture as shown, corners inclusive, the text that
    names it): LiteMedSAM's box, framed in its colour and named above its top-left corner.
    corner: ((y, x) slice px of the picture as shown, a hint): the first corner of a box being drawn,
    a cross in LiteMedSAM's colour with the hint beside it (:func:`_corner`).

    base_rgb: the enlarged slice (:func:`grey_rgb`); masks are (y, x) on the slice grid.
    ray_centres: (n_rays, K, 2) patch centres (y, x) in slice px; fov_corners: (4, 2) U-net field of view.
    letters: the patient directions at the (top, bottom, left, right) edges (:func:`edge_letters`).
    """
    out = base_rgb.astype(np.float32)
    width = max(2, factor)
    edges = []
    for c in contours:
        m = np.asarray(c.mask, dtype=bool)
        if not m.any():
            continue
        up = _enlarge(m, factor)
        colour = np.asarray(COLOURS[c.key], dtype=np.float32)
        if c.fill and opacity > 0:
            out[up] = out[up] * (1.0 - opacity) + colour * opacity
        edges.append((_broken(_edge(up, width), c.style, width), colour))
    img = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)).convert("RGBA")
    lay = overlay_layout(img.size, factor, contours, point_yx, caption, inset)
    scale = lay["scale"]
    labels = []
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if fov_corners is not None:
        pts = [tuple(p[::-1]) for p in slice_to_display(fov_corners, factor)]
        for a, b in zip(pts, pts[1:] + pts[:1], strict=True):
            _dashed_line(draw, a, b, (*COLOURS["unet"], 255), 2)
    if ray_centres is not None and point_yx is not None:
        centres = slice_to_display(ray_centres, factor)
        start = slice_to_display(np.asarray(point_yx, dtype=np.float64), factor)
        n = centres.shape[0]
        for i in range(n):
            col = ray_colour(i, n)
            line = [(start[1], start[0])] + [(p[1], p[0]) for p in centres[i]]
            draw.line(line, fill=(*col, 190), width=1)
            for p in centres[i]:
                draw.ellipse([p[1] - 2, p[0] - 2, p[1] + 2, p[0] + 2], fill=(*col, 190))
            end = centres[i, -1]
            d = end - start
            d = d / (np.linalg.norm(d) + 1e-9)
            ty, tx = end + d * 10 * scale
            labels.append(((tx - 5 * scale, ty - 7 * scale), str(i), col))
    if prompt_box is not None:
        (y0, x0, y1, x1), text = prompt_box
        # the frame goes round the corner pixels, which the box includes
        frame = [x0 * factor - 1, y0 * factor - 1, (x1 + 1) * factor, (y1 + 1) * factor]
        draw.rectangle(frame, outline=(*COLOURS["litemedsam"], 255), width=2)
        size = int(11 * scale)
        labels.append(((frame[0], max(0, frame[1] - size - 4)), text, COLOURS["litemedsam"]))
    if corner is not None:
        labels.append(_corner(draw, corner[0], corner[1], factor, scale, img.size))
    img = Image.alpha_composite(img, layer).convert("RGB")
    if lay["marker"] is not None:  # under the outlines: the marker never hides a small answer
        _marker(ImageDraw.Draw(img), lay["marker"], lay["marker_r"])
    # Outlines (with a dark halo) go over the fills, the rays and the marker, so none hides a contour.
    out = np.asarray(img).copy()
    for edge, _ in edges:
        halo = ndimage.binary_dilation(edge) & ~edge
        out[halo] = out[halo] // 3
    for edge, colour in edges:
        out[edge] = colour.astype(np.uint8)
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    for xy, text, col in labels:
        outlined_text(draw, xy, text, int(11 * scale), fill=col)
    if lay["inset"] is not None:
        _inset(img, *lay["inset"])
    if lay["legend"] is not None:
        _legend(img, [(c.name, COLOURS[c.key], c.style) for c in contours], *lay["legend"])
    if lay["caption"] is not None:
        (x0, y0, x1, y1), size = lay["caption"]
        shade = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 170))
        img.paste(shade, (x0, y0), shade)
        outlined_text(ImageDraw.Draw(img), (x0 + 6, y0 + 4), caption, size)
    if letters is not None:
        edge_letters(img, letters, int(14 * scale))
    return np.asarray(img)


def _inset(img: Image.Image, source: Sequence[int], target: Sequence[int]) -> None:
    """Pastes the ``source`` box of ``img`` magnified (nearest neighbour: pixels stay crisp) into the
    ``target`` box, framed in the marker's colour, and frames the source thinly: where it comes from."""
    side = int(target[2] - target[0])
    crop = img.crop(tuple(int(v) for v in source)).resize((side, side), Image.Resampling.NEAREST)
    img.paste(crop, (int(target[0]), int(target[1])))
    draw = ImageDraw.Draw(img)
    col = COLOURS["marker"]
    draw.rectangle([target[0] - 2, target[1] - 2, target[2] + 1, target[3] + 1], outline=(0, 0, 0), width=3)
    draw.rectangle([target[0] - 1, target[1] - 1, target[2], target[3]], outline=col, width=1)
    draw.rectangle([source[0] - 1, source[1] - 1, source[2], source[3]], outline=col, width=1)


def edge_letters(img: Image.Image, letters: Sequence[str], size: int) -> None:
    """Prints the patient directions ``letters`` (top, bottom, left, right; e.g. "A", "P", "R", "L",
    :attr:`~seqpatch_core.images.orientation.PlaneDisplay.letters`) in the middle of each edge of
    ``img``, in place, where a radiologist looks for them."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    pad = 3
    spots = ((w / 2, pad, "mt"), (w / 2, h - pad, "mb"), (pad, h / 2, "lm"), (w - pad, h / 2, "rm"))
    for text, (x, y, anchor) in zip(letters, spots, strict=True):
        outlined_text(draw, (x, y), text, size, anchor=anchor)


def _dashed_line(draw: ImageDraw.ImageDraw, a, b, colour, width: int, dash: float = 6.0) -> None:
    ax, ay = a
    bx, by = b
    length = math.hypot(bx - ax, by - ay)
    if length == 0:
        return
    steps = int(length // dash)
    for s in range(0, steps + 1, 2):
        t0 = s * dash / length
        t1 = min(1.0, (s + 1) * dash / length)
        draw.line(
            [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
            fill=colour,
            width=width,
        )


def render_likelihood(
    windowed: np.ndarray,
    likelihood: np.ndarray,
    coverage: np.ndarray,
    factor: int,
    *,
    key: str,
    mask: np.ndarray | None = None,
    point_yx: Sequence[float] | None = None,
    title: str = "",
    cmap: str = "magma",
    width: int | None = None,
    text_px: int = 11,
) -> np.ndarray:
    """A fused likelihood map in colour over the dimmed slice (where no patch reached), the
    thresholded mask's outline in the method's colour, the click, an optional title and a colour bar.

    windowed, likelihood, coverage, mask: (H, W) on the slice grid; point_yx in slice px. The picture is
    the slice enlarged ``factor`` times, or, with ``width``, resampled (nearest neighbour) to ``width``
    px wide: the size it is shown at, so that its text is not shrunk by the browser. text_px: the
    colour bar's numbers, in picture px.
    """
    lut = colour_table(cmap)
    h, w = likelihood.shape
    if width is None:
        zoom = float(factor)
        rows, cols = np.repeat(np.arange(h), factor), np.repeat(np.arange(w), factor)
    else:
        zoom = int(width) / w
        out_h = max(1, int(round(h * zoom)))
        rows = np.minimum(((np.arange(out_h) + 0.5) / zoom).astype(np.intp), h - 1)
        cols = np.minimum(((np.arange(int(width)) + 0.5) / zoom).astype(np.intp), w - 1)
    pick = np.ix_(rows, cols)
    lik = np.clip(np.nan_to_num(likelihood[pick]), 0.0, 1.0)
    rgb = lut[(lik * 255.0 + 0.5).astype(np.uint8)].astype(np.float32)
    grey = np.clip(windowed[pick], 0, 1)[..., None] * 255.0 * 0.45
    rgb = np.where((coverage[pick] > 1e-6)[..., None], rgb, grey)
    if mask is not None and np.any(mask):
        edge = _edge(np.asarray(mask, dtype=bool)[pick], max(1, int(zoom) // 2 + 1))
        rgb[edge] = COLOURS[key]
    img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    scale = max(1.0, img.width / 560)
    if point_yx is not None:
        at = (np.asarray(point_yx, dtype=np.float64) + 0.5) * zoom - 0.5
        _marker(draw, at, 4 * scale)
    if title:
        outlined_text(draw, (8, 6), title, int(14 * scale), fill=COLOURS[key])
    draw_colourbar(img, lut, max(scale, text_px / 11))
    return np.asarray(img)


def plane_size(n_rows: int, n_cols: int, row_mm: float, col_mm: float, longest: int = _TARGET_PX) -> tuple[int, int]:
    """(height, width) in picture px of an ``n_rows × n_cols`` plane with ``row_mm × col_mm`` voxels,
    physical aspect kept, its longer side ``longest`` px (each side at least 1 px)."""
    h_mm = max(int(n_rows), 1) * float(row_mm)
    w_mm = max(int(n_cols), 1) * float(col_mm)
    scale = longest / max(h_mm, w_mm, 1e-9)
    return max(1, int(round(h_mm * scale))), max(1, int(round(w_mm * scale)))


def render_plane(
    windowed: np.ndarray,
    spacing_rc: Sequence[float],
    contours: Sequence[Contour] = (),
    *,
    opacity: float = 0.3,
    current_line: tuple[int, int] | None = None,
    caption: str | None = None,
    letters: Sequence[str] | None = None,
    longest: int = _TARGET_PX,
) -> np.ndarray:
    """A plane across the slices (e.g. coronal or sagittal), as shown, in its physical aspect.

    windowed: (rows, columns) in [0, 1]; spacing_rc: (row, column) pixel size in mm; contours:
    (rows, columns) masks (filled and outlined in the method's colour); current_line: (0, row) or
    (1, column): the slice shown in the main view, marked by a line; letters: the patient directions at
    the (top, bottom, left, right) edges. Nearest-neighbour resampling: one resize of the plane and of
    each mask, no filtering.
    """
    n_rows, n_cols = windowed.shape
    h, w = plane_size(n_rows, n_cols, spacing_rc[0], spacing_rc[1], longest)
    rows = np.minimum((np.arange(h) + 0.5) * n_rows / h, n_rows - 1).astype(np.intp)
    cols = np.minimum((np.arange(w) + 0.5) * n_cols / w, n_cols - 1).astype(np.intp)
    g = (np.clip(windowed, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[np.ix_(rows, cols)]
    out = np.repeat(g[..., None], 3, axis=2)
    edges = []
    for c in contours:
        m = np.asarray(c.mask, dtype=bool)
        if not m.any():
            continue
        up = m[np.ix_(rows, cols)]
        colour = np.asarray(COLOURS[c.key], dtype=np.float32)
        if c.fill and opacity > 0:
            out[up] = (out[up] * (1.0 - opacity) + colour * opacity + 0.5).astype(np.uint8)
        edges.append((_broken(_edge(up, 1), c.style, 2 if c.dotted else 1), colour.astype(np.uint8)))
    for edge, colour in edges:
        out[edge] = colour
    if current_line is not None:
        axis, at = current_line
        n, px = (n_rows, h) if axis == 0 else (n_cols, w)
        if 0 <= at < n:
            i = min(px - 1, int((at + 0.5) * px / n))
            if axis == 0:
                out[i, :] = COLOURS["marker"]
            else:
                out[:, i] = COLOURS["marker"]
    if (caption or letters) and h >= 24:
        img = Image.fromarray(out)
        if caption:
            outlined_text(ImageDraw.Draw(img), (4, 2), caption, 12)
        if letters is not None:
            edge_letters(img, letters, 12)
        out = np.asarray(img)
    return out


def placeholder(text: str, size: tuple[int, int] = (240, 420)) -> np.ndarray:
    """A dark picture with a centred line of text (no image / no result yet)."""
    h, w = size
    img = Image.new("RGB", (w, h), (30, 30, 34))
    draw = ImageDraw.Draw(img)
    font = get_font(15)
    lines = text.split("\n")
    y = h // 2 - 10 * len(lines)
    for line in lines:
        tw = font.getlength(line)
        draw.text(((w - tw) / 2, y), line, font=font, fill=(200, 200, 205))
        y += 20
    return np.asarray(img)
