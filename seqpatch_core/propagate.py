"""3D propagation of a one-click 2D segmentation through the neighbouring slices.

Starting from the clicked slice, the object is followed slice by slice towards +z and towards -z:
the click on slice ``z ± 1`` is the mass centre of the mask accepted on slice ``z`` (or the mask
pixel nearest to it when the centre falls outside the mask, e.g. for a crescent). A direction stops

* when the new mask *vanishes*: fewer than ``min_area_px`` pixels;
* on an *area jump*: the new area ``A_new`` and the previous slice's ``A_prev`` have a ratio
  ``A_new / A_prev > max_area_ratio`` or ``< 1 / max_area_ratio``. The default 2.0 allows an object to
  double or halve from one slice to the next, which covers round objects up to their poles at usual
  slice thicknesses; larger jumps are typically a leak into a neighbour of similar intensity or a
  different object, and that slice is discarded;
* at the end of the volume.

Arrays follow :mod:`seqpatch_core.io`: volumes are (z, y, x), clicks (y, x) in slice pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from seqpatch_core.errors import InputError
from seqpatch_core.intensity import Window
from seqpatch_core.metrics import mask_click  # noqa: F401 (the click rule; imported from here too)
from seqpatch_core.predictor import Predictor

log = logging.getLogger(__name__)

__all__ = ["Propagation", "mask_click", "propagate"]


@dataclass
class Propagation:
    """The object followed through the volume.

    Attributes:
        mask3d: bool (z, y, x), the volume's shape; True on the accepted slices' masks.
        z_range: (lo, hi) inclusive slice indices of the accepted slices (both the clicked slice
            when nothing else was accepted).
        volume_ml: foreground volume in mL (voxel count × spacing product in mm³ / 1000).
        per_slice: one dict per accepted slice, sorted by z: ``{"z": int, "click": [y, x] (slice
            px, float), "area_px": int}``.
        stops: why each direction stopped: ``{"+z": reason, "-z": reason}`` with reason one of
            ``"vanished"``, ``"area_jump"``, ``"volume_end"`` or ``"empty_start"`` (the clicked
            slice itself gave fewer than ``min_area_px`` pixels: its mask is kept, as a plain
            ``predict`` gives it, and no other slice is tried).
    """

    mask3d: np.ndarray
    z_range: tuple[int, int]
    volume_ml: float
    per_slice: list[dict] = field(default_factory=list)
    stops: dict[str, str] = field(default_factory=dict)


def propagate(
    predictor: Predictor,
    point_zyx,
    method: str = "seqpatch",
    preset: str | None = None,
    threshold: float = 0.5,
    max_area_ratio: float = 2.0,
    min_area_px: int = 4,
    window: str | Window | None = None,
    coarsen: bool | None = None,
    on_slice: Callable[[int], None] | None = None,
) -> Propagation:
    """Segment the object clicked at ``point_zyx`` (voxel indices z, y, x) on its slice and beyond.

    See the module docstring for the stopping rules. ``preset``, ``threshold`` and ``coarsen`` are
    passed to :meth:`Predictor.predict` for every slice. ``window`` (None: the predictor's setting) is
    resolved once at the first click and held for every slice: with ``auto`` the window depends on the
    click's surroundings, and letting it switch (say lung to soft tissue) halfway through an object
    would change the segmentation for no anatomical reason. ``on_slice(n)`` is called before the n-th
    slice is segmented (n = 1, 2, ...: a progress bar). Raises InputError for a point outside the
    volume or ``max_area_ratio`` <= 1.
    """
    if not (max_area_ratio > 1.0 and math.isfinite(max_area_ratio)):
        raise InputError(f"max_area_ratio must be a finite number > 1, got {max_area_ratio}")
    z0, y0, x0 = predictor.check_point(point_zyx)
    vol = predictor.volume
    nz = vol.shape[0]
    mask3d = np.zeros(vol.shape, dtype=bool)
    rows: list[dict] = []
    stops: dict[str, str] = {}

    held = predictor.resolve_window((z0, y0, x0), window)
    count = [0]

    def segment(z: int, click: tuple[float, float]) -> np.ndarray:
        count[0] += 1
        if on_slice is not None:
            on_slice(count[0])
        res = predictor.predict(
            (z, *click), method=method, preset=preset, threshold=threshold, coarsen=coarsen, window=held
        )
        return np.asarray(res.mask, dtype=bool)

    first = segment(z0, (y0, x0))
    area0 = int(first.sum())
    mask3d[z0] = first
    rows.append({"z": z0, "click": [y0, x0], "area_px": area0})
    if area0 < min_area_px:
        stops = {"+z": "empty_start", "-z": "empty_start"}
    else:
        for step, name in ((1, "+z"), (-1, "-z")):
            prev, prev_area = first, area0
            z = z0 + step
            stops[name] = "volume_end"
            while 0 <= z < nz:
                click = mask_click(prev)
                mask = segment(z, click)
                area = int(mask.sum())
                if area < min_area_px:
                    stops[name] = "vanished"
                    break
                ratio = area / prev_area
                if ratio > max_area_ratio or ratio < 1.0 / max_area_ratio:
                    log.debug("slice %d: area %d px vs %d (x%.2f): stop", z, area, prev_area, ratio)
                    stops[name] = "area_jump"
                    break
                mask3d[z] = mask
                rows.append({"z": z, "click": [click[0], click[1]], "area_px": area})
                prev, prev_area = mask, area
                z += step
    rows.sort(key=lambda r: r["z"])
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    return Propagation(
        mask3d=mask3d,
        z_range=(rows[0]["z"], rows[-1]["z"]),
        volume_ml=float(mask3d.sum()) * voxel_ml,
        per_slice=rows,
        stops=stops,
    )
