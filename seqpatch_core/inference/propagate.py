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

LiteMedSAM, which takes boxes, follows an object as MedSAM's own 3D inference does
(:func:`iter_propagate_boxes`): the box on slice ``z ± 1`` is the tight box of the mask on slice
``z`` grown by a few pixels; a direction stops when the mask vanishes or the volume ends (no area
rule: the box already bounds how far the mask can grow from one slice to the next).

Arrays follow :mod:`seqpatch_core.images.io`: volumes are (z, y, x), clicks (y, x) in slice pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import mask_click
from seqpatch_core.images.intensity import Window
from seqpatch_core.images.volume import Volume
from seqpatch_core.inference.boxes import Box, BoxPredictor, box_around
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models.litemedsam import IMAGE_SIZE

log = logging.getLogger(__name__)

__all__ = [
    "BOX_STEP_MARGIN",
    "Propagation",
    "SliceStep",
    "box_step_margin_px",
    "iter_propagate",
    "iter_propagate_boxes",
    "propagate",
    "propagate_boxes",
]

#: Margin of each next slice's box around the previous slice's mask, in pixels of LiteMedSAM's
#: 256 x 256 input: MedSAM's own 3D inference grows the box this much (``get_bbox256``,
#: ``bbox_shift=3``), so that an object a little larger on the next slice still fits in its box.
BOX_STEP_MARGIN = 3


@dataclass
class Propagation:
    """The object followed through the volume.

    Attributes:
        mask3d: bool (z, y, x), the volume's shape; True on the accepted slices' masks.
        z_range: (lo, hi) inclusive slice indices of the accepted slices (both the clicked slice
            when nothing else was accepted).
        volume_ml: foreground volume in mL (voxel count × spacing product in mm³ / 1000).
        per_slice: one dict per accepted slice, sorted by z: ``{"z": int, "click": [y, x] (slice
            px, float), "area_px": int}``, and ``"box": [z, y0, x0, y1, x1]`` (voxel indices, corners
            inclusive) when LiteMedSAM followed the object (its click is the box's centre).
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
    its direction ends here ("vanished", "area_jump", "empty_start"; None while it goes on); box:
    LiteMedSAM's prompt on the slice (:func:`iter_propagate_boxes`, whose click is the box's centre),
    None for a click method.
    """

    z: int
    direction: str
    click: tuple[float, float]
    mask: np.ndarray
    area_px: int
    accepted: bool
    stop: str | None = None
    box: Box | None = None


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

    def next_slice(prev: np.ndarray, z: int) -> tuple[np.ndarray, tuple[float, float], None]:
        click = mask_click(prev)
        return segment(z, click), click, None

    yield from _walk(z0, nz, first, (y0, x0), None, next_slice, min_area_px, max_area_ratio)


def _walk(
    z0: int,
    nz: int,
    first: np.ndarray,
    click: tuple[float, float],
    box: Box | None,
    next_slice: Callable[[np.ndarray, int], tuple[np.ndarray, tuple[float, float], Box | None]],
    min_area_px: int,
    max_area_ratio: float,
) -> Iterator[SliceStep]:
    """The slice-to-slice walk shared by the click and the box methods: ``first`` (H, W) bool is the
    clicked slice's mask (from ``click`` and ``box``); ``next_slice(previous accepted mask, z)`` gives
    slice z's (mask, click, box). ``max_area_ratio`` inf: no area rule."""
    area0 = int(first.sum())
    if area0 < min_area_px:  # kept, as a plain predict gives it, and no other slice is tried
        yield SliceStep(z0, "click", click, first, area0, True, "empty_start", box)
        return
    yield SliceStep(z0, "click", click, first, area0, True, None, box)
    for step, name in ((1, "+z"), (-1, "-z")):
        prev, prev_area = first, area0
        z = z0 + step
        while 0 <= z < nz:
            mask, click, box = next_slice(prev, z)
            area = int(mask.sum())
            if area < min_area_px:
                yield SliceStep(z, name, click, mask, area, False, "vanished", box)
                break
            ratio = area / prev_area
            if ratio > max_area_ratio or ratio < 1.0 / max_area_ratio:
                log.debug("slice %d: area %d px vs %d (x%.2f): stop", z, area, prev_area, ratio)
                yield SliceStep(z, name, click, mask, area, False, "area_jump", box)
                break
            yield SliceStep(z, name, click, mask, area, True, None, box)
            prev, prev_area = mask, area
            z += step


def box_step_margin_px(shape_yx: tuple[int, int]) -> int:
    """:data:`BOX_STEP_MARGIN` in pixels of a slice of ``shape_yx`` (H, W): LiteMedSAM's input holds
    the slice's longest side in 256 px; at least 1, so that the box of a one-pixel-thin mask has an
    area."""
    return max(1, round(BOX_STEP_MARGIN * max(shape_yx) / IMAGE_SIZE))


def _box_centre(box: Box) -> tuple[float, float]:
    return (box.y0 + box.y1) / 2, (box.x0 + box.x1) / 2


def iter_propagate_boxes(
    boxes: BoxPredictor,
    box: Box | Sequence[float],
    min_area_px: int = 4,
    margin_px: int | None = None,
) -> Iterator[SliceStep]:
    """Follow with LiteMedSAM the object in ``box`` (``(z, y0, x0, y1, x1)`` voxel indices, corners
    inclusive, on a slice of ``boxes.volume``), as :func:`iter_propagate` does with a click.

    Slice z ± 1 is prompted with the tight box of the mask accepted on slice z grown by
    ``margin_px`` (None: :func:`box_step_margin_px`) and kept inside the slice. A direction stops
    when the mask has fewer than ``min_area_px`` pixels ("vanished") or at the end of the volume. Each
    new slice runs LiteMedSAM's encoder once (the predictor's per-slice cache keeps the last few).
    Raises InputError for a bad box (:meth:`BoxPredictor.check_box`) or ``min_area_px`` or
    ``margin_px`` < 1 (before anything is segmented).
    """
    start = boxes.check_box(box.as_list() if isinstance(box, Box) else box)
    nz, h, w = boxes.volume.shape
    margin = box_step_margin_px((h, w)) if margin_px is None else int(margin_px)
    if margin < 1 or int(min_area_px) < 1:  # the box of a mask needs an area to prompt with
        raise InputError(f"the box margin and the smallest area must be >= 1 px, got {margin_px}, {min_area_px}")

    def next_slice(prev: np.ndarray, z: int) -> tuple[np.ndarray, tuple[float, float], Box]:
        b = box_around(prev, z, margin)  # prev holds >= min_area_px pixels, so b is a box
        return boxes.predict(b.as_list()).mask, _box_centre(b), b

    first = boxes.predict(start.as_list()).mask
    yield from _walk(start.z, nz, first, _box_centre(start), start, next_slice, int(min_area_px), math.inf)


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
    steps = iter_propagate(
        predictor, point_zyx, method, preset, threshold, max_area_ratio, min_area_px, window, coarsen
    )
    return _gather(steps, predictor.volume, on_slice)


def propagate_boxes(
    boxes: BoxPredictor,
    box: Box | Sequence[float],
    min_area_px: int = 4,
    margin_px: int | None = None,
    on_slice: Callable[[int], None] | None = None,
) -> Propagation:
    """LiteMedSAM's whole object from ``box``: :func:`iter_propagate_boxes` run to its end and
    gathered (``on_slice`` as in :func:`propagate`; ``per_slice`` rows carry each slice's box)."""
    return _gather(iter_propagate_boxes(boxes, box, min_area_px, margin_px), boxes.volume, on_slice)


def _gather(steps: Iterable[SliceStep], vol: Volume, on_slice: Callable[[int], None] | None) -> Propagation:
    """The :class:`Propagation` of a walk run to its end, ``on_slice(n)`` after the n-th slice."""
    done = []
    for n, st in enumerate(steps, start=1):
        done.append(st)
        if on_slice is not None:
            on_slice(n)
    mask3d = np.zeros(vol.shape, dtype=bool)
    rows = []
    for st in done:
        if st.accepted:
            mask3d[st.z] = st.mask
            row = {"z": st.z, "click": [st.click[0], st.click[1]], "area_px": st.area_px}
            if st.box is not None:
                row["box"] = st.box.as_list()
            rows.append(row)
    if done[0].stop == "empty_start":
        stops = {"+z": "empty_start", "-z": "empty_start"}
    else:
        ends = {st.direction: st.stop for st in done if st.stop}
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
