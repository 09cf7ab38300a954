"""Pictures for the demo, numpy and PIL only (no Gradio): every function returns an RGB uint8 array.

Coordinates: slices and masks are (y, x) arrays; points are (y, x) slice pixels (floats allowed).
Slices are shown enlarged by an integer ``factor`` (:func:`display_factor`) so that small crops stay
readable and contours stay crisp; :func:`display_to_slice` maps a click on the shown picture back.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = [
    "COLOURS",
    "Contour",
    "display_factor",
    "display_to_slice",
    "grey_rgb",
    "placeholder",
    "render_likelihood",
    "render_overlay",
    "render_plane",
    "render_ray_detail",
    "render_ray_grid",
    "slice_to_display",
]

#: Contour colours (Okabe–Ito inspired, told apart with the common colour-vision deficiencies;
#: the ground truth is also dashed).
COLOURS: dict[str, tuple[int, int, int]] = {
    "seqpatch": (255, 128, 0),
    "unet": (86, 180, 233),
    "truth": (0, 220, 150),
    "marker": (255, 240, 60),
}
#: Display names.
NAMES = {"seqpatch": "SeqPatch", "unet": "U-net", "truth": "ground truth"}

_TARGET_PX = 512  # slices are enlarged until their longer side reaches about this
_MAX_FACTOR = 4


@lru_cache(maxsize=1)
def _font_file() -> str | None:
    """DejaVu Sans, which matplotlib ships: it has the ×, →, …, °, ≥ and − that labels use (Pillow's
    built-in font draws them as boxes)."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return str(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - any failure: Pillow's own font
        return None


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    size = max(6, int(size))
    path = _font_file()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


@lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def display_factor(shape_yx: Sequence[int]) -> int:
    """Integer enlargement for a slice of ``shape_yx`` (1 for 512×512, up to 4 for small crops)."""
    longest = max(int(shape_yx[0]), int(shape_yx[1]), 1)
    return int(min(_MAX_FACTOR, max(1, math.ceil(_TARGET_PX / longest))))


def display_to_slice(
    xy_display: Sequence[float], factor: int, shape_yx: Sequence[int]
) -> tuple[float, float]:
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


def _text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill=(255, 255, 255)) -> None:
    draw.text(xy, text, font=_font(size), fill=fill, stroke_width=2, stroke_fill=(0, 0, 0))


def legend_size(entries: Sequence[tuple[str, tuple[int, int, int], str]], picture_width: int) -> tuple[int, int, int]:
    """(width, height, font size) of the legend box on a picture ``picture_width`` px wide: the font
    shrinks on narrow pictures so the box never spans more than about half of the width."""
    size = max(11, int(round(13 * max(1.0, picture_width / 560))))
    while True:
        swatch = 3 * size // 2
        width = max(int(_font(size).getlength(name)) for name, _, _ in entries) + swatch + 22
        if width <= picture_width * 0.5 or size <= 8:
            return width, (size + 6) * len(entries) + 8, size
        size -= 1


def _legend(
    img: Image.Image,
    entries: list[tuple[str, tuple[int, int, int], str]],
    avoid_yx: Sequence[float] | None = None,
) -> tuple[int, int, int, int] | None:
    """A legend box, (name, colour, style) per line, in the picture corner farthest from ``avoid_yx``
    (the click marker, in picture px), so it never hides the click. Returns its box (x0, y0, x1, y1)."""
    if not entries:
        return None
    width, height, size = legend_size(entries, img.width)
    line = size + 6
    swatch = 3 * size // 2
    font = _font(size)
    corners = [(6, 6), (img.width - width - 6, 6)]
    x, y = corners[0]
    if avoid_yx is not None:
        ay, ax = float(avoid_yx[0]), float(avoid_yx[1])
        x, y = max(corners, key=lambda c: math.hypot(c[0] + width / 2 - ax, c[1] + height / 2 - ay))
    x = max(0, x)
    box = Image.new("RGBA", (width, height), (0, 0, 0, 170))
    img.paste(box, (x, y), box)
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
    return x, y, x + width, y + height


def _marker(draw: ImageDraw.ImageDraw, yx_display: Sequence[float], r: float) -> None:
    y, x = float(yx_display[0]), float(yx_display[1])
    col = COLOURS["marker"]
    for width, colour in ((4, (0, 0, 0)), (2, col)):
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=width)
        draw.line([(x - 2 * r, y), (x - r * 0.5, y)], fill=colour, width=width)
        draw.line([(x + r * 0.5, y), (x + 2 * r, y)], fill=colour, width=width)
        draw.line([(x, y - 2 * r), (x, y - r * 0.5)], fill=colour, width=width)
        draw.line([(x, y + r * 0.5), (x, y + 2 * r)], fill=colour, width=width)


def ray_colour(i: int, n: int) -> tuple[int, int, int]:
    """A distinct hue per ray, shared by the slice overlay and the per-ray grid."""
    r, g, b = colorsys.hsv_to_rgb((i / max(n, 1)) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


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
) -> np.ndarray:
    """The slice with filled, outlined masks, the click marker, optional rays and a legend.

    base_rgb: the enlarged slice (:func:`grey_rgb`); masks are (y, x) on the slice grid.
    ray_centres: (n_rays, K, 2) patch centres (y, x) in slice px; fov_corners: (4, 2) U-net field of view.
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
    scale = max(1.0, img.width / 560)
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
    img = Image.alpha_composite(img, layer).convert("RGB")
    # Outlines (with a dark halo) go over the fills and the rays, so neither hides a contour.
    out = np.asarray(img).copy()
    for edge, _ in edges:
        halo = ndimage.binary_dilation(edge) & ~edge
        out[halo] = out[halo] // 3
    for edge, colour in edges:
        out[edge] = colour.astype(np.uint8)
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    for xy, text, col in labels:
        _text(draw, xy, text, int(11 * scale), fill=col)
    marker = None
    if point_yx is not None:
        marker = slice_to_display(np.asarray(point_yx, dtype=np.float64), factor)
        _marker(draw, marker, 5 * scale)
    entries = [(c.name, COLOURS[c.key], c.style) for c in contours]
    _legend(img, entries, avoid_yx=marker)
    if caption:
        size = int(12 * scale)
        box = Image.new("RGBA", (int(font_len(caption, size)) + 12, size + 10), (0, 0, 0, 170))
        img.paste(box, (2, img.height - size - 12), box)
        draw = ImageDraw.Draw(img)
        _text(draw, (8, img.height - size - 8), caption, size)
    return np.asarray(img)


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


def colourbar_labels(picture_width: int, scale: float) -> list[tuple[str, tuple[float, float, float, float], int]]:
    """The colour bar's labels on a picture ``picture_width`` px wide: (text, box (x0, y0, x1, y1)
    relative to the bar's top-left corner, font size). The word "likelihood" is left out, then the
    font shrinks, until no two boxes overlap."""
    w = colourbar_width(picture_width, scale)
    h = int(10 * scale)
    for with_word in (True, False):
        for size in range(int(11 * scale), 6, -1):
            texts = [("0", 0.0), ("1", 1.0)] + ([("likelihood", 0.5)] if with_word else [])
            boxes = []
            for text, at in texts:
                tw = font_len(text, size)
                x0 = min(max(-2.0, at * w - tw / 2), w + 2 - tw) if at != 0.5 else (w - tw) / 2
                boxes.append((text, (x0, h + 2.0, x0 + tw, h + 2.0 + size), size))
            ordered = sorted(b[1] for b in boxes)
            if all(a[2] + 2 <= b[0] for a, b in zip(ordered, ordered[1:], strict=False)):
                return boxes
    return boxes[:2]


def colourbar_width(picture_width: int, scale: float) -> int:
    return max(20, min(picture_width // 3, int(140 * scale)))


def _colourbar(img: Image.Image, lut: np.ndarray, scale: float) -> None:
    h = int(10 * scale)
    w = colourbar_width(img.width, scale)
    x0 = img.width - w - 10
    y0 = img.height - h - 10 - int(14 * scale)
    bar = lut[np.linspace(0, 255, w).astype(int)][None].repeat(h, axis=0)
    img.paste(Image.fromarray(bar), (x0, y0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([x0 - 1, y0 - 1, x0 + w, y0 + h], outline=(255, 255, 255))
    for text, (bx, by, _, _), size in colourbar_labels(img.width, scale):
        _text(draw, (x0 + bx, y0 + by), text, size)


def font_len(text: str, size: int) -> float:
    return float(_font(size).getlength(text))


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
) -> np.ndarray:
    """A fused likelihood map in colour over the dimmed slice (where no patch reached), the
    thresholded mask's outline in the method's colour, the click, a title and a colour bar."""
    lut = _lut(cmap)
    lik = np.clip(np.nan_to_num(likelihood), 0.0, 1.0)
    rgb = lut[(lik * 255.0 + 0.5).astype(np.uint8)].astype(np.float32)
    grey = np.clip(windowed, 0, 1)[..., None] * 255.0 * 0.45
    covered = (coverage > 1e-6)[..., None]
    rgb = np.where(covered, rgb, grey)
    rgb = _enlarge(rgb, factor)
    if mask is not None and np.any(mask):
        edge = _edge(_enlarge(np.asarray(mask, dtype=bool), factor), max(1, factor // 2 + 1))
        rgb[edge] = COLOURS[key]
    img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    scale = max(1.0, img.width / 560)
    if point_yx is not None:
        _marker(draw, slice_to_display(np.asarray(point_yx, dtype=np.float64), factor), 4 * scale)
    if title:
        _text(draw, (8, 6), title, int(14 * scale), fill=COLOURS[key])
    _colourbar(img, lut, scale)
    return np.asarray(img)


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
    lut = _lut(cmap)
    g = (np.clip(patches, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    lk = lut[(np.clip(np.nan_to_num(likelihoods), 0, 1) * 255.0 + 0.5).astype(np.uint8)]
    for i in range(n):
        y0 = top + i * (ps + pad)
        for j in range(k):
            x0 = left + j * (cw + pad)
            frame = COLOURS["seqpatch"] if inside is not None and inside[i, j] else (70, 70, 70)
            canvas[y0 - 2 : y0 + ps + 2, x0 - 2 : x0 + cw + 2] = frame
            canvas[y0 : y0 + ps, x0 : x0 + ps] = _resize(g[i, j], ps)[..., None]
            canvas[y0 : y0 + ps, x0 + ps : x0 + ps + gap] = 0
            canvas[y0 : y0 + ps, x0 + ps + gap : x0 + cw] = _resize(lk[i, j], ps)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    _text(
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
        _text(draw, (6, y0 + ps // 2 - font), label, font, fill=ray_colour(i, n))
        if ps >= 2 * font + 4:
            _text(draw, (6, y0 + ps // 2 + 1), f"{360.0 * i / n:.1f}°", small, fill=(200, 200, 200))
    for j in range(k):
        x0 = left + j * (cw + pad)
        _text(draw, (x0 + cw // 2 - 4, height - small - 6), str(j), small, fill=(200, 200, 200))
    return np.asarray(img)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """A (P, P) or (P, P, 3) uint8 patch to (size, size) by nearest neighbour (crisp pixels)."""
    p = a.shape[0]
    idx = np.minimum((np.arange(size) + 0.5) * p / size, p - 1).astype(np.intp)
    return a[np.ix_(idx, idx)]


def _centre_mean(maps: np.ndarray) -> np.ndarray:
    """(K, P, P) -> (K,): the mean of each map's central quarter (around the patch centre)."""
    p = maps.shape[-1]
    q = max(1, p // 4)
    c = p // 2
    return maps[:, c - q : c + q, c - q : c + q].mean(axis=(1, 2))


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
    frame). Returns an RGB uint8 picture exactly ``width`` px wide.
    """
    k = patches.shape[0]
    rows = [("input patch", np.clip(patches, 0, 1), True), ("fused (both memories)", likelihoods, False)]
    if forward is not None:
        rows.append(("forward memory only", forward, False))
    if backward is not None:
        rows.append(("backward memory only", backward, False))
    left, pad, font = 150, 4, 13
    ps = max(8, int((width - left - 8 - k * pad) // k))
    top = font + 18
    plot_h = 110
    height = top + len(rows) * (ps + pad) + font + 10 + plot_h + 10
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)
    lut = _lut(cmap)
    for r, (_, maps, grey) in enumerate(rows):
        y0 = top + r * (ps + pad)
        u8 = (np.clip(np.nan_to_num(maps), 0, 1) * 255.0 + 0.5).astype(np.uint8)
        for j in range(k):
            x0 = left + j * (ps + pad)
            if r == 0 and inside is not None and inside[j]:
                canvas[y0 - 2 : y0 + ps + 2, x0 - 2 : x0 + ps + 2] = COLOURS["seqpatch"]
            cell = _resize(u8[j], ps)
            canvas[y0 : y0 + ps, x0 : x0 + ps] = cell[..., None] if grey else lut[cell]
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    colour = ray_colour(ray, n_rays)
    _text(draw, (8, 4), f"ray {ray} of {n_rays} ({360.0 * ray / max(n_rays, 1):.1f}°), inside → outside", font + 1,
          fill=colour)  # fmt: skip
    for r, (name, _, _) in enumerate(rows):
        _text(draw, (8, top + r * (ps + pad) + ps // 2 - font // 2), name, font)
    ky = top + len(rows) * (ps + pad) + 2
    for j in range(k):
        _text(draw, (left + j * (ps + pad) + ps // 2 - 4, ky), str(j), font - 2, fill=(200, 200, 200))
    # the likelihood at the patch centres along the ray: where the memories disagree is the crossing
    py0 = ky + font + 8
    x_of = [left + j * (ps + pad) + ps / 2 for j in range(k)]
    draw.rectangle([left - 2, py0, x_of[-1] + ps / 2, py0 + plot_h], outline=(90, 90, 90))
    draw.line([(left - 2, py0 + plot_h / 2), (x_of[-1] + ps / 2, py0 + plot_h / 2)], fill=(60, 60, 60))
    curves = [("fused", likelihoods, COLOURS["seqpatch"]), ("forward only", forward, (120, 200, 255)),
              ("backward only", backward, (230, 120, 230))]  # fmt: skip
    ly = py0 + 4
    for name, maps, col in curves:
        if maps is None:
            continue
        v = np.clip(_centre_mean(np.asarray(maps, dtype=np.float32)), 0, 1)
        pts = [(x, py0 + plot_h - 4 - float(t) * (plot_h - 8)) for x, t in zip(x_of, v, strict=True)]
        draw.line(pts, fill=col, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=col)
        _text(draw, (8, ly), name, font - 1, fill=col)
        ly += font + 3
    _text(draw, (8, py0 + plot_h - font - 2), "likelihood at the centre", font - 2, fill=(200, 200, 200))
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
    current_row: int | None = None,
    caption: str | None = None,
    longest: int = _TARGET_PX,
) -> np.ndarray:
    """A coronal or sagittal plane (rows = z, top = slice 0) in its physical aspect.

    windowed: (z, n) in [0, 1]; spacing_rc: (row, column) voxel size in mm; contours: (z, n) masks
    (filled and outlined in the method's colour); current_row: the axial slice shown, marked by a line.
    Nearest-neighbour resampling: one resize of the plane and of each mask, no filtering.
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
    if current_row is not None and 0 <= current_row < n_rows:
        y = min(h - 1, int((current_row + 0.5) * h / n_rows))
        out[y, :] = COLOURS["marker"]
    if caption and h >= 24:
        img = Image.fromarray(out)
        _text(ImageDraw.Draw(img), (4, 2), caption, 12)
        out = np.asarray(img)
    return out


def placeholder(text: str, size: tuple[int, int] = (240, 420)) -> np.ndarray:
    """A dark picture with a centred line of text (no image / no result yet)."""
    h, w = size
    img = Image.new("RGB", (w, h), (30, 30, 34))
    draw = ImageDraw.Draw(img)
    font = _font(15)
    lines = text.split("\n")
    y = h // 2 - 10 * len(lines)
    for line in lines:
        tw = font.getlength(line)
        draw.text(((w - tw) / 2, y), line, font=font, fill=(200, 200, 205))
        y += 20
    return np.asarray(img)
