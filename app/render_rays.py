"""The per-ray pictures of SeqPatch (numpy and PIL only): all rays × K patches (:func:`render_ray_grid`)
and one ray large with its forward-only and backward-only readouts (:func:`render_ray_detail`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from app.drawing import COLOURS, colour_table, fit_font, font_len, outlined_text, ray_colour, resize_patch

__all__ = ["MIN_DETAIL_WIDTH", "DetailLayout", "detail_layout", "render_ray_detail", "render_ray_grid"]

#: :func:`render_ray_detail` draws narrower requests at this width.
MIN_DETAIL_WIDTH = 120
#: Tiles of :func:`render_ray_detail` are at most this many px (a short ray on a wide picture stays short).
MAX_TILE = 128


def render_ray_grid(
    patches: np.ndarray,
    likelihoods: np.ndarray,
    *,
    inside: np.ndarray | None = None,
    cmap: str = "magma",
    cell: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """The per-ray view: one row per ray, K cells inside → outside; each cell shows the input patch
    (grey, left) beside its likelihood (colour, right).

    patches, likelihoods: (n_rays, K, P, P) in [0, 1]. inside: (n_rays, K) bool, patch centre inside
    the final mask (that cell gets a SeqPatch-coloured frame; the others a dark one). ``width``: draw
    for a picture of about that many px (cells and text sized to be read there, not shrunk by the
    browser); else ``cell`` (px per patch pixel) or 64-px patches.
    """
    n, k, p, _ = patches.shape
    gap, pad = 2, 6
    if width is not None:
        left = 56
        ps = max(8, int((width - left - pad - k * (gap + pad)) // (2 * k)))
        font, small = 12, 11
    else:
        left = 84
        ps = p * (cell or max(1, 64 // p))
        font, small = 14, 12
    top = font + 16
    cw = 2 * ps + gap
    total_w = left + k * (cw + pad) + pad
    height = top + n * (ps + pad) + pad + small + 8
    canvas = np.full((height, total_w, 3), 24, dtype=np.uint8)
    lut = colour_table(cmap)
    g = (np.clip(patches, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    lk = lut[(np.clip(np.nan_to_num(likelihoods), 0, 1) * 255.0 + 0.5).astype(np.uint8)]
    for i in range(n):
        y0 = top + i * (ps + pad)
        for j in range(k):
            x0 = left + j * (cw + pad)
            frame = COLOURS["seqpatch"] if inside is not None and inside[i, j] else (70, 70, 70)
            canvas[y0 - 2 : y0 + ps + 2, x0 - 2 : x0 + cw + 2] = frame
            canvas[y0 : y0 + ps, x0 : x0 + ps] = resize_patch(g[i, j], ps)[..., None]
            canvas[y0 : y0 + ps, x0 + ps : x0 + ps + gap] = 0
            canvas[y0 : y0 + ps, x0 + ps + gap : x0 + cw] = resize_patch(lk[i, j], ps)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    outlined_text(
        draw,
        (left, 6),
        f"{n} rays × K = {k}, inside → outside: input | likelihood; orange: centre inside the mask"
        if width is not None
        else f"{n} rays × K = {k} patches, inside → outside; in each cell the input patch (left) and its "
        "likelihood (right); orange frame: patch centre inside the mask",
        font,
    )
    for i in range(n):
        y0 = top + i * (ps + pad)
        label = f"ray {i}" if ps >= 2 * font + 4 else str(i)
        outlined_text(draw, (6, y0 + ps // 2 - font), label, font, fill=ray_colour(i, n))
        if ps >= 2 * font + 4:
            outlined_text(draw, (6, y0 + ps // 2 + 1), f"{360.0 * i / n:.1f}°", small, fill=(200, 200, 200))
    for j in range(k):
        x0 = left + j * (cw + pad)
        outlined_text(draw, (x0 + cw // 2 - 4, height - small - 6), str(j), small, fill=(200, 200, 200))
    return np.asarray(img)


def _centre_mean(maps: np.ndarray) -> np.ndarray:
    """(K, P, P) -> (K,): the mean of each map's central quarter (around the patch centre)."""
    p = maps.shape[-1]
    q = max(1, p // 4)
    c = p // 2
    return maps[:, c - q : c + q, c - q : c + q].mean(axis=(1, 2))


@dataclass(frozen=True)
class DetailLayout:
    """Sizes of :func:`render_ray_detail` on a picture ``width`` px wide (all in px).

    font: text size; left: x of the first tile column; ps: tile side; pad: gap between tile columns;
    label_above: row names in a band above their rows (narrow pictures) instead of a left column;
    tick_every: a time-step number under every n-th column; plot_h: height of the likelihood plot.
    """

    width: int
    font: int
    left: int
    ps: int
    pad: int
    label_above: bool
    tick_every: int
    plot_h: int

    def x(self, j: int) -> int:
        """Left edge of tile column ``j``."""
        return self.left + j * (self.ps + self.pad)


def detail_layout(width: int, k: int, names: Sequence[str]) -> DetailLayout:
    """The layout of one ray with ``k`` time steps and rows ``names`` on a picture ``width`` px wide
    (at least :data:`MIN_DETAIL_WIDTH`): fonts, gaps and tiles (at most :data:`MAX_TILE`) shrink with the
    width; the row names move above their rows when a left column for them would leave tiles under 8 px."""
    width = max(int(width), MIN_DETAIL_WIDTH)
    k = max(int(k), 1)
    font = int(np.clip(7 + (width - 120) // 80, 7, 13))
    side = max(font_len(n, font) for n in names) + 16
    label_above = width - side - 8 < k * 10
    left = 6 if label_above else int(math.ceil(side))
    room = width - left - 6
    pad = 4 if room >= 16 * k else 2 if room >= 6 * k else 1 if room >= 2 * k else 0
    ps = int(np.clip((room - k * pad) // k, 1, MAX_TILE))
    tick = font_len(str(k - 1), max(6, font - 2)) + 3
    tick_every = max(1, int(math.ceil(tick / (ps + pad))))
    plot_h = int(np.clip(width // 6, 48, 110))
    if not label_above:  # the curve names and the axis note sit in the left column beside the plot
        plot_h = max(plot_h, 8 + 4 * (font + 3))
    return DetailLayout(width, font, left, ps, pad, label_above, tick_every, plot_h)


def render_ray_detail(
    patches: np.ndarray,
    likelihoods: np.ndarray,
    *,
    ray: int,
    n_rays: int,
    inside: np.ndarray | None = None,
    forward: np.ndarray | None = None,
    backward: np.ndarray | None = None,
    width: int = 900,
    cmap: str = "magma",
) -> np.ndarray:
    """One ray, large enough to read: a row per kind of picture, a column per time step k = 0 … K-1
    (inside → outside), and below them the likelihood at the patch centres along the ray.

    patches, likelihoods: (K, P, P) in [0, 1], the input patches and the fused likelihoods; forward,
    backward: (K, P, P) likelihoods of the same network with only its forward or only its backward
    memory (rows left out when None); inside: (K,) bool, patch centre inside the final mask (orange
    frame). Returns an RGB uint8 picture exactly ``max(width, MIN_DETAIL_WIDTH)`` px wide; any K from 1
    to 40 fits from that width on (:func:`detail_layout`).
    """
    k = patches.shape[0]
    rows = [("input patch", np.clip(patches, 0, 1), True), ("fused (both memories)", likelihoods, False)]
    if forward is not None:
        rows.append(("forward memory only", forward, False))
    if backward is not None:
        rows.append(("backward memory only", backward, False))
    lay = detail_layout(width, k, [name for name, _, _ in rows])
    width, font, ps = lay.width, lay.font, lay.ps
    band = font + 5 if lay.label_above else 0
    row_h = band + ps + 4
    top = font + 18
    ky = top + len(rows) * row_h + 2
    py0 = ky + font + 8
    curves = [("fused", likelihoods, COLOURS["seqpatch"]), ("forward only", forward, (120, 200, 255)),
              ("backward only", backward, (230, 120, 230))]  # fmt: skip
    curves = [c for c in curves if c[1] is not None]
    legend_h = (len(curves) + 1) * (font + 3) + 4 if lay.label_above else 0
    height = py0 + lay.plot_h + 10 + legend_h
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)
    lut = colour_table(cmap)
    b = min(2, max(1, lay.pad))  # frame width
    for r, (_, maps, grey) in enumerate(rows):
        y0 = top + r * row_h + band
        u8 = (np.clip(np.nan_to_num(maps), 0, 1) * 255.0 + 0.5).astype(np.uint8)
        if r == 0 and inside is not None:  # frames first: a tile never hides its neighbour
            for j in np.flatnonzero(np.asarray(inside[:k], dtype=bool)):
                canvas[y0 - b : y0 + ps + b, max(0, lay.x(j) - b) : lay.x(j) + ps + b] = COLOURS["seqpatch"]
        for j in range(k):
            cell = resize_patch(u8[j], ps)
            canvas[y0 : y0 + ps, lay.x(j) : lay.x(j) + ps] = cell[..., None] if grey else lut[cell]
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    deg = 360.0 * ray / max(n_rays, 1)
    title = f"ray {ray} of {n_rays} ({deg:.1f}°), inside → outside"
    if font_len(title, fit_font(title, font + 1, width - 12)) > width - 12:
        title = f"ray {ray}/{n_rays} ({deg:.0f}°)"
    outlined_text(draw, (8, 4), title, fit_font(title, font + 1, width - 12), fill=ray_colour(ray, n_rays))
    for r, (name, _, _) in enumerate(rows):
        if lay.label_above:
            y, size = top + r * row_h, fit_font(name, font, width - 12)
        else:
            y, size = top + r * row_h + ps // 2 - font // 2, font
        outlined_text(draw, (8, y), name, size)
    small = max(6, font - 2)
    for j in range(0, k, lay.tick_every):
        outlined_text(draw, (lay.x(j) + ps // 2 - font_len(str(j), small) / 2, ky), str(j), small, fill=(200, 200, 200))
    # the likelihood at the patch centres along the ray: where the memories disagree is the crossing
    plot_h = lay.plot_h
    x_of = [lay.x(j) + ps / 2 for j in range(k)]
    x1 = min(width - 2, x_of[-1] + ps / 2 + 2)
    draw.rectangle([lay.left - 2, py0, x1, py0 + plot_h], outline=(90, 90, 90))
    draw.line([(lay.left - 2, py0 + plot_h / 2), (x1, py0 + plot_h / 2)], fill=(60, 60, 60))
    # the y axis: likelihood 0, 0.5 and 1, left of the frame (inside it where the names sit above)
    for t, text in ((1.0, "1"), (0.5, "0.5"), (0.0, "0")):
        y = py0 + plot_h - 4 - t * (plot_h - 8)
        draw.line([(lay.left - 6, y), (lay.left - 2, y)], fill=(150, 150, 150))
        at, anchor = ((lay.left - 8, y), "rm") if not lay.label_above else ((lay.left + 1, y), "lm")
        outlined_text(draw, at, text, small, fill=(200, 200, 200), anchor=anchor)
    # the curve names: beside the plot in the left column, or under it on narrow pictures
    ly = py0 + 4 if not lay.label_above else py0 + plot_h + 6
    for name, maps, col in curves:
        v = np.clip(_centre_mean(np.asarray(maps, dtype=np.float32)), 0, 1)
        pts = [(x, py0 + plot_h - 4 - float(t) * (plot_h - 8)) for x, t in zip(x_of, v, strict=True)]
        draw.line(pts, fill=col, width=2 if ps >= 4 else 1)
        dot = 2 if ps >= 4 else 1
        for x, y in pts:
            draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=col)
        outlined_text(draw, (8, ly), name, font - 1, fill=col)
        ly += font + 3
    note = "likelihood at the centre"
    note_y = py0 + plot_h - font - 2 if not lay.label_above else ly
    # beside the plot the note keeps clear of the axis numbers (0.5 at most, right-aligned at left - 8)
    room = width - 12 if lay.label_above else lay.left - 16 - font_len("0.5", small)
    outlined_text(draw, (8, note_y), note, fit_font(note, font - 2, room), fill=(200, 200, 200))
    return np.asarray(img)
