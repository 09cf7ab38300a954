"""Display windows: how an intensity range is mapped into [0, 1].

The model sees a slice exactly as it is displayed: windowed into [0, 1] by :func:`apply_window`.
CT uses the radiologists' fixed presets in HU; MR (arbitrary units) uses volume percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from seqpatch_core.base.errors import InputError

if TYPE_CHECKING:  # only for annotations: windowing needs no image reader (nor SimpleITK)
    from seqpatch_core.images.volume import Volume

__all__ = [
    "CT_PRESETS",
    "WINDOW_CHOICES",
    "WINDOW_NAMES",
    "Window",
    "apply_window",
    "auto_window",
    "mr_window",
    "preset_window",
    "resolve_window",
]

#: CT presets as (width, level) in HU.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "soft": (400, 40),
    "lung": (1500, -600),
    "bone": (1800, 400),
    "brain": (80, 40),
}
#: The windows chosen by name: the per-image choice, the CT presets and the MR percentiles.
WINDOW_NAMES = ("auto", *CT_PRESETS, "mr")
#: What a window option accepts: a name, or "W,L" (width and level).
WINDOW_CHOICES = (*WINDOW_NAMES, "W,L")

# auto_window's CT rule (see its docstring).
_AUTO_RADIUS_MM = 30.0
_AUTO_AIR_HU = -400.0
_AUTO_AIR_FRACTION = 0.35
_AUTO_BONE_MEDIAN_HU = 300.0
# Percentiles of more voxels than this are taken on a strided subsample (fast, accurate enough).
_MR_SAMPLE = 500_000


@dataclass(frozen=True)
class Window:
    """Intensities ``lo`` → 0 and ``hi`` → 1 (``hi > lo``), with a display name."""

    lo: float
    hi: float
    name: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo):
            raise InputError(f"a window needs finite lo < hi, got lo={self.lo:g}, hi={self.hi:g}")

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def level(self) -> float:
        return (self.lo + self.hi) / 2.0

    @classmethod
    def from_width_level(cls, width: float, level: float, name: str) -> Window:
        return cls(float(level) - float(width) / 2.0, float(level) + float(width) / 2.0, name)

    def __str__(self) -> str:
        return f"{self.name} W{self.width:g}/L{self.level:g}"


def mr_window(array: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> Window:
    """Window from the ``lo_pct``/``hi_pct`` percentiles of ``array`` (any shape), named "mr".

    Large arrays are subsampled with a fixed stride to 0.5–1 M voxels, which keeps this to a few
    tens of ms for 512×512×100. Non-finite values are ignored. When the percentiles coincide
    (mostly-constant images) the full range is used, and at worst a window of width 1.
    """
    if not 0.0 <= lo_pct < hi_pct <= 100.0:
        raise InputError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {lo_pct}, {hi_pct}")
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        raise InputError("cannot compute a window of an empty image")
    if flat.size > _MR_SAMPLE:
        flat = flat[:: flat.size // _MR_SAMPLE]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise InputError("cannot compute a window: the image has no finite values")
    lo, hi = (float(v) for v in np.percentile(flat, [lo_pct, hi_pct]))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        hi = lo + 1.0
    return Window(lo, hi, "mr")


def preset_window(name: str, array: np.ndarray | None = None) -> Window:
    """The named window: a CT preset ("soft", "lung", "bone", "brain") or "mr" (needs ``array``)."""
    key = name.strip().lower()
    if key in CT_PRESETS:
        width, level = CT_PRESETS[key]
        return Window.from_width_level(width, level, key)
    if key == "mr":
        if array is None:
            raise InputError("the mr window needs the image to compute percentiles")
        return mr_window(array)
    raise InputError(f"unknown window {name!r}; choose one of {', '.join(WINDOW_CHOICES)}")


def auto_window(volume: Volume, point_zyx: Sequence[float] | None = None, z: int | None = None) -> Window:
    """The window a radiologist would read the clicked region in.

    CT (``volume.modality == "CT"`` or a minimum ≤ -500 HU): take the pixels of the clicked slice
    within 30 mm (in-plane, using the spacing) of the click — the whole middle slice when there
    is no point. If ≥ 35 % of them are below -400 HU (air/lung) →
    "lung"; else if their median is ≥ 300 HU → "bone"; else "soft". "brain" (W80/L40) is only
    chosen explicitly. Otherwise (MR, unknown): the 0.5/99.5 percentiles of the volume ("mr").

    Args:
        point_zyx: continuous voxel index (z, y, x) inside the volume, or None.
        z: without a point, the slice whose pixels decide (default: the middle one). The demo picks
            its window this way once per volume, on the slice it opens at, so that nearby clicks on
            one object never get different windows.
    """
    if not volume.is_ct:
        return mr_window(volume.array)
    nz, ny, nx = volume.shape
    if point_zyx is None:
        sl = volume.array[nz // 2 if z is None else int(np.clip(z, 0, nz - 1))]
        region = sl.reshape(-1)
    else:
        if len(point_zyx) != 3:
            raise InputError(f"a point needs 3 coordinates (z, y, x), got {len(point_zyx)}")
        z, y, x = (float(v) for v in point_zyx)
        if not (-0.5 <= z < nz - 0.5 and -0.5 <= y < ny - 0.5 and -0.5 <= x < nx - 0.5):
            raise InputError(f"point (z={z:g}, y={y:g}, x={x:g}) is outside the image of size {nz}×{ny}×{nx} (z×y×x)")
        sl = volume.array[int(round(z))]
        _sz, sy, sx = volume.spacing
        # Only the bounding box of the disc is touched, so this stays cheap on 512×512 slices.
        ry, rx = _AUTO_RADIUS_MM / sy, _AUTO_RADIUS_MM / sx
        y0, y1 = max(0, math.floor(y - ry)), min(ny, math.ceil(y + ry) + 1)
        x0, x1 = max(0, math.floor(x - rx)), min(nx, math.ceil(x + rx) + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = ((yy - y) * sy) ** 2 + ((xx - x) * sx) ** 2 <= _AUTO_RADIUS_MM**2
        region = sl[y0:y1, x0:x1][disc]
        if region.size == 0:  # spacing larger than the radius: use the clicked pixel
            region = sl[int(round(y)), int(round(x))].reshape(1)
    if np.mean(region < _AUTO_AIR_HU) >= _AUTO_AIR_FRACTION:
        return preset_window("lung")
    if float(np.median(region)) >= _AUTO_BONE_MEDIAN_HU:
        return preset_window("bone")
    return preset_window("soft")


def resolve_window(spec: str, volume: Volume, point_zyx: Sequence[float] | None = None) -> Window:
    """The window for a user's choice.

    Args:
        spec: "auto", "soft", "lung", "bone", "brain", "mr", or "W,L" (width > 0 and level, in the
            image's units, e.g. "1500,-600").
        point_zyx: the click, used by "auto".
    """
    key = str(spec).strip().lower()
    if key == "auto":
        return auto_window(volume, point_zyx)
    if key in CT_PRESETS or key == "mr":
        return preset_window(key, volume.array)
    parts = key.split(",")
    if len(parts) == 2:
        try:
            width, level = float(parts[0]), float(parts[1])
        except ValueError:
            width = level = math.nan
        if math.isfinite(width) and math.isfinite(level) and width > 0:
            return Window.from_width_level(width, level, "custom")
    raise InputError(
        f"unknown window {spec!r}; choose auto, soft, lung, bone, brain, mr, or W,L (e.g. 1500,-600, width > 0)"
    )


def apply_window(array: np.ndarray, window: Window) -> np.ndarray:
    """``clip((array - lo) / (hi - lo), 0, 1)`` as float32, same shape as ``array``."""
    out = np.asarray(array, dtype=np.float32) - np.float32(window.lo)
    out *= np.float32(1.0 / window.width)
    np.clip(out, 0.0, 1.0, out=out)
    return out
