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


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
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
    """One mask to outline: ``key`` picks the colour and legend name ("seqpatch", "unet", "truth")."""

    key: str
    mask: np.ndarray
    dashed: bool = False
    fill: bool = True


def _edge(mask_up: np.ndarray, width: int) -> np.ndarray:
    if not mask_up.any():
        return mask_up
    inner = ndimage.binary_erosion(mask_up, iterations=width, border_value=0)
    return mask_up & ~inner


def _text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill=(255, 255, 255)) -> None:
    draw.text(xy, text, font=_font(size), fill=fill, stroke_width=2, stroke_fill=(0, 0, 0))


def _legend(img: Image.Image, entries: list[tuple[str, tuple[int, int, int], bool]], scale: float) -> None:
    """A legend box in the top-left corner: (name, colour, dashed) per line."""
    if not entries:
        return
    size = max(11, int(round(13 * scale)))
    line = size + 6
    swatch = 3 * size // 2
    font = _font(size)
    width = max(int(font.getlength(name)) for name, _, _ in entries) + swatch + 22
    height = line * len(entries) + 8
    box = Image.new("RGBA", (width, height), (0, 0, 0, 170))
    img.paste(box, (6, 6), box)
    draw = ImageDraw.Draw(img)
    for i, (name, colour, dashed) in enumerate(entries):
        y = 6 + 4 + i * line + line // 2
        x0 = 6 + 7
        if dashed:
            for s in range(0, swatch, 6):
                draw.line([(x0 + s, y), (x0 + min(s + 3, swatch), y)], fill=colour, width=3)
        else:
            draw.line([(x0, y), (x0 + swatch, y)], fill=colour, width=3)
        draw.text((x0 + swatch + 6, y - size // 2 - 1), name, font=font, fill=(255, 255, 255))


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
        edge = _edge(up, width)
        if c.dashed:
            yy, xx = np.nonzero(edge)
            keep = ((yy + xx) // (3 * width)) % 3 != 2  # long dashes, short gaps
            edge = np.zeros_like(edge)
            edge[yy[keep], xx[keep]] = True
        edges.append((edge, colour))
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
    if point_yx is not None:
        _marker(draw, slice_to_display(np.asarray(point_yx, dtype=np.float64), factor), 5 * scale)
    entries = []
    for c in contours:
        entries.append((NAMES.get(c.key, c.key), COLOURS[c.key], c.dashed))
    _legend(img, entries, scale)
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


def _colourbar(img: Image.Image, lut: np.ndarray, scale: float) -> None:
    h = int(10 * scale)
    w = min(img.width // 3, int(140 * scale))
    x0 = img.width - w - 10
    y0 = img.height - h - 10 - int(14 * scale)
    bar = lut[np.linspace(0, 255, w).astype(int)][None].repeat(h, axis=0)
    img.paste(Image.fromarray(bar), (x0, y0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([x0 - 1, y0 - 1, x0 + w, y0 + h], outline=(255, 255, 255))
    size = int(11 * scale)
    _text(draw, (x0 - 2, y0 + h + 2), "0", size)
    _text(draw, (x0 + w - size // 2 - 2, y0 + h + 2), "1", size)
    _text(draw, (x0 + w // 2 - int(font_len("likelihood", size) / 2), y0 + h + 2), "likelihood", size)


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
) -> np.ndarray:
    """The per-ray view: one row per ray, K cells inside → outside; each cell shows the input patch
    (grey, left) beside its likelihood (colour, right).

    patches, likelihoods: (n_rays, K, P, P) in [0, 1]. inside: (n_rays, K) bool, patch centre inside
    the final mask (that cell gets a SeqPatch-coloured frame; the others a dark one).
    """
    n, k, p, _ = patches.shape
    s = cell or max(1, 64 // p)
    ps = p * s
    gap, pad, left, top = 2, 8, 84, 30
    cw = 2 * ps + gap
    width = left + k * (cw + pad) + pad
    height = top + n * (ps + pad) + pad + 22
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)
    lut = _lut(cmap)
    g = (np.clip(patches, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    lk = lut[(np.clip(np.nan_to_num(likelihoods), 0, 1) * 255.0 + 0.5).astype(np.uint8)]
    for i in range(n):
        y0 = top + i * (ps + pad)
        for j in range(k):
            x0 = left + j * (cw + pad)
            frame = COLOURS["seqpatch"] if inside is not None and inside[i, j] else (70, 70, 70)
            canvas[y0 - 2 : y0 + ps + 2, x0 - 2 : x0 + cw + 2] = frame
            canvas[y0 : y0 + ps, x0 : x0 + ps] = _enlarge(g[i, j], s)[..., None]
            canvas[y0 : y0 + ps, x0 + ps : x0 + ps + gap] = 0
            canvas[y0 : y0 + ps, x0 + ps + gap : x0 + cw] = _enlarge(lk[i, j], s)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    _text(
        draw,
        (left, 6),
        f"k = 0 … {k - 1}   (inside -> outside along each ray; "
        "left: input patch, right: likelihood; orange frame: patch centre inside the mask)",
        14,
    )
    for i in range(n):
        y0 = top + i * (ps + pad)
        angle = 360.0 * i / n
        _text(draw, (8, y0 + ps // 2 - 16), f"ray {i}", 14, fill=ray_colour(i, n))
        _text(draw, (8, y0 + ps // 2 + 2), f"{angle:.1f}°", 12, fill=(200, 200, 200))
    for j in range(k):
        x0 = left + j * (cw + pad)
        _text(draw, (x0 + cw // 2 - 6, height - 20), str(j), 12, fill=(200, 200, 200))
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
        edge = _edge(up, 1)
        if c.dashed:
            yy, xx = np.nonzero(edge)
            keep = ((yy + xx) // 4) % 3 != 2
            edge = np.zeros_like(edge)
            edge[yy[keep], xx[keep]] = True
        edges.append((edge, colour.astype(np.uint8)))
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
