"""Drawing primitives shared by :mod:`app.render` and :mod:`app.render_rays` (numpy and PIL only):
colours, display names, fonts, colour tables and colour bars, outlined text, ray hues and
nearest-neighbour patch resizing."""

from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Contour colours (Okabe–Ito inspired, told apart with the common colour-vision deficiencies;
#: the ground truth is also dashed).
COLOURS: dict[str, tuple[int, int, int]] = {
    "seqpatch": (255, 128, 0),
    "unet": (86, 180, 233),
    "litemedsam": (204, 121, 167),  # Okabe–Ito reddish purple: apart from orange, sky blue and green
    "truth": (0, 220, 150),
    "marker": (255, 240, 60),
}
#: Display names.
NAMES = {"seqpatch": "SeqPatch", "unet": "U-net", "litemedsam": "LiteMedSAM", "truth": "ground truth"}


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
def get_font(size: int) -> ImageFont.ImageFont:
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
def colour_table(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def outlined_text(
    draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill=(255, 255, 255), anchor: str | None = None
) -> None:
    """``text`` with a black outline, readable on any grey; ``anchor`` as Pillow's (default: top-left)."""
    draw.text(xy, text, font=get_font(size), fill=fill, stroke_width=2, stroke_fill=(0, 0, 0), anchor=anchor)


def font_len(text: str, size: int) -> float:
    return float(get_font(size).getlength(text))


def fit_font(text: str, size: int, room: float, smallest: int = 6) -> int:
    """The largest font size from ``size`` down to ``smallest`` at which ``text`` is at most ``room`` px
    long (``smallest`` when none is)."""
    size = max(int(size), smallest)
    while size > smallest and font_len(text, size) > room:
        size -= 1
    return size


def ray_colour(i: int, n: int) -> tuple[int, int, int]:
    """A distinct hue per ray, shared by the slice overlay and the per-ray grid."""
    r, g, b = colorsys.hsv_to_rgb((i / max(n, 1)) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def resize_patch(a: np.ndarray, size: int) -> np.ndarray:
    """A (P, P) or (P, P, 3) uint8 patch to (size, size) by nearest neighbour (crisp pixels)."""
    p = a.shape[0]
    idx = np.minimum((np.arange(size) + 0.5) * p / size, p - 1).astype(np.intp)
    return a[np.ix_(idx, idx)]


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


def draw_colourbar(img: Image.Image, lut: np.ndarray, scale: float) -> None:
    h = int(10 * scale)
    w = colourbar_width(img.width, scale)
    x0 = img.width - w - 10
    y0 = img.height - h - 10 - int(14 * scale)
    bar = lut[np.linspace(0, 255, w).astype(int)][None].repeat(h, axis=0)
    img.paste(Image.fromarray(bar), (x0, y0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([x0 - 1, y0 - 1, x0 + w, y0 + h], outline=(255, 255, 255))
    for text, (bx, by, _, _), size in colourbar_labels(img.width, scale):
        outlined_text(draw, (x0 + bx, y0 + by), text, size)
