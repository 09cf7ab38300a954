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

Arrays follow :mod:`seqpatch_core.images.io`: volumes are (z, y, x), clicks (y, x) in slice pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import mask_click
from seqpatch_core.images.intensity import Window
from seqpatch_core.inference.predictor import Predictor

log = logging.getLogger(__name__)

__all__ = ["Propagation", "SliceStep", "iter_propagate", "propagate"]


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


@dataclass
class SliceStep:
    """One slice segmented while following the object (what :func:`iter_propagate` yields).

    z: the slice; direction: "click" (the clicked slice), "+z" or "-z"; click: (y, x) slice px;
    mask: (H, W) bool; area_px: its pixel count; accepted: whether it is part of the object; stop: why
    its direction ends here ("vanished", "area_jump", "empty_start"; None while it goes on).
    """

    z: int
    direction: str
    click: tuple[float, float]
    mask: np.ndarray
    area_px: int
    accepted: bool
    stop: str | None = None


def iter_propagate(
    predictor: Predictor,
    point_zyx,
    method: str = "seqpatch",
    preset: str | None = None,
    threshold: float = 0.5,
    max_area_ratio: float = 2.0,
    min_area_px: int = 4,
    window: str | Window | None = None,
    coarsen: bool | None = None,
) -> Iterator[SliceStep]:
    """Follow the object clicked at ``point_zyx`` (voxel indices z, y, x), yielding each slice as it
    is segmented: the clicked one, then +z, then -z (the caller drives progress and may stop early).

    See the module docstring for the stopping rules. ``preset``, ``threshold`` and ``coarsen`` are
    passed to :meth:`Predictor.predict` for every slice. ``window`` (None: the predictor's setting) is
    resolved once at the first click and held for every slice: with ``auto`` the window depends on the
    click's surroundings, and letting it switch (say lung to soft tissue) halfway through an object
    would change the segmentation for no anatomical reason. Raises InputError for a point outside the
    volume or ``max_area_ratio`` <= 1 (before anything is segmented).
    """
    if not (max_area_ratio > 1.0 and math.isfinite(max_area_ratio)):
        raise InputError(f"max_area_ratio must be a finite number > 1, got {max_area_ratio}")
    z0, y0, x0 = predictor.check_point(point_zyx)
    nz = predictor.volume.shape[0]
    held = predictor.resolve_window((z0, y0, x0), window)

    def segment(z: int, click: tuple[float, float]) -> np.ndarray:
        res = predictor.predict(
            (z, *click), method=method, preset=preset, threshold=threshold, coarsen=coarsen, window=held
        )
        return np.asarray(res.mask, dtype=bool)

    first = segment(z0, (y0, x0))
    area0 = int(first.sum())
    if area0 < min_area_px:  # kept, as a plain predict gives it, and no other slice is tried
        yield SliceStep(z0, "click", (y0, x0), first, area0, True, "empty_start")
        return
    yield SliceStep(z0, "click", (y0, x0), first, area0, True)
    for step, name in ((1, "+z"), (-1, "-z")):
        prev, prev_area = first, area0
        z = z0 + step
        while 0 <= z < nz:
            click = mask_click(prev)
            mask = segment(z, click)
            area = int(mask.sum())
            if area < min_area_px:
                yield SliceStep(z, name, click, mask, area, False, "vanished")
                break
            ratio = area / prev_area
            if ratio > max_area_ratio or ratio < 1.0 / max_area_ratio:
                log.debug("slice %d: area %d px vs %d (x%.2f): stop", z, area, prev_area, ratio)
                yield SliceStep(z, name, click, mask, area, False, "area_jump")
                break
            yield SliceStep(z, name, click, mask, area, True)
            prev, prev_area = mask, area
            z += step


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
    """The whole object clicked at ``point_zyx``: :func:`iter_propagate` run to its end and gathered.

    ``on_slice(n)`` is called after the n-th slice is segmented (n = 1, 2, ...: a progress bar).
    """
    vol = predictor.volume
    steps = []
    for n, st in enumerate(
        iter_propagate(predictor, point_zyx, method, preset, threshold, max_area_ratio, min_area_px, window, coarsen),
        start=1,
    ):
        steps.append(st)
        if on_slice is not None:
            on_slice(n)
    mask3d = np.zeros(vol.shape, dtype=bool)
    rows = []
    for st in steps:
        if st.accepted:
            mask3d[st.z] = st.mask
            rows.append({"z": st.z, "click": [st.click[0], st.click[1]], "area_px": st.area_px})
    if steps[0].stop == "empty_start":
        stops = {"+z": "empty_start", "-z": "empty_start"}
    else:
        ends = {st.direction: st.stop for st in steps if st.stop}
        stops = {d: ends.get(d, "volume_end") for d in ("+z", "-z")}
    rows.sort(key=lambda r: r["z"])
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    return Propagation(
        mask3d=mask3d,
        z_range=(rows[0]["z"], rows[-1]["z"]),
        volume_ml=float(mask3d.sum()) * voxel_ml,
        per_slice=rows,
        stops=stops,
    )
