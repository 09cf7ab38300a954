"""Segmentation metrics in physical units (the paper's Dice, CD, HD95, ABD and aRVD).

Conventions
-----------
* Masks are numpy arrays, 2D ``(y, x)`` or 3D ``(z, y, x)``, of dtype bool or any integer/float
  type where non-zero means foreground (typically uint8 0/1). ``pred`` and ``ref`` must have the
  same shape.
* ``spacing`` is the pixel/voxel size in mm, in the SAME axis order as the array: ``(y, x)`` for
  2D and ``(z, y, x)`` for 3D (note: SimpleITK's ``GetSpacing()`` is ``(x, y, z)``, reverse it).
* Every value returned is a plain Python ``float`` that is finite, so results always serialise
  with :func:`json.dumps`.

Surface distances
-----------------
The boundary of a mask is ``mask & ~binary_erosion(mask)`` with scipy's default (face-connected)
structuring element, computed on the mask padded by one background pixel on every side, so an
object touching the image edge has a boundary there. For every boundary pixel of ``pred`` the
distance (mm, Euclidean with anisotropic ``spacing``, between pixel centres) to the nearest
boundary pixel of ``ref`` is taken from ``distance_transform_edt(~boundary_ref, sampling=spacing)``,
and vice versa. The two directed sets are POOLED into one array (the "symmetric surface
distances", as in MedPy's ``hd95``):

* HD95 = ``numpy.percentile(pooled, 95)`` (default linear interpolation);
* ABD  = ``mean(pooled)``, i.e. each boundary pixel of either mask counts once. This differs from
  the mean of the two directed means when the boundaries have different pixel counts.

Empty masks
-----------
Defined values instead of NaN/inf:

* both empty: dice 1.0; cd, hd95, abd 0.0; arvd 0.0.
* exactly one empty: dice 0.0; hd95 and abd = the diagonal of the whole grid in mm,
  ``sqrt(sum((shape_i * spacing_i) ** 2))``, i.e. of the field of view, which exceeds any
  distance measurable between two pixel centres, so a missed or spurious object always scores
  worse than any real prediction; cd along each axis = the grid extent along that axis,
  ``shape_i * spacing_i`` mm (``cd_z`` stays 0.0 for 2D); arvd = 1.0 (exact when ``pred`` is
  empty; capped at 1.0 when ``ref`` is empty, where the ratio is undefined).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from seqpatch_core.base.errors import InputError

__all__ = [
    "average_boundary_distance",
    "centroid_distance",
    "dice",
    "evaluate_masks",
    "hausdorff95",
    "relative_volume_difference",
]

logger = logging.getLogger(__name__)

_AXIS_NAMES_3D = ("z", "y", "x")


def _as_mask(arr: np.ndarray, name: str) -> np.ndarray:
    """Return ``arr`` as a bool array (non-zero = foreground), checking it is 2D or 3D."""
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise InputError(f"{name} must be a 2D (y, x) or 3D (z, y, x) mask, got {a.ndim} dimensions")
    return a.astype(bool, copy=False)


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (pred, ref) pair to bool arrays of equal shape."""
    p = _as_mask(pred, "pred")
    r = _as_mask(ref, "ref")
    if p.shape != r.shape:
        raise InputError(f"pred and ref masks differ in shape: {p.shape} vs {r.shape}")
    return p, r


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Validate ``spacing`` (mm, array axis order) against the mask dimensionality."""
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be a sequence of {ndim} numbers in mm, got {spacing!r}") from None
    if len(sp) != ndim:
        raise InputError(
            f"spacing has {len(sp)} values but the masks have {ndim} dimensions "
            f"(give it in array order: {'(y, x)' if ndim == 2 else '(z, y, x)'})"
        )
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing values must be finite and positive (mm), got {sp}")
    return sp


def _grid_extent(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[float, ...]:
    """Physical size of the grid along each array axis, ``shape_i * spacing_i`` (mm)."""
    return tuple(n * s for n, s in zip(shape, spacing, strict=True))


def _grid_diagonal(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """Diagonal of the whole grid (field of view) in mm: the empty-mask distance penalty."""
    return float(math.hypot(*_grid_extent(shape, spacing)))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of ``mask`` (bool, same shape): foreground with a background face neighbour.

    The mask is padded by one background pixel before the erosion, so pixels on the image edge
    count as boundary whatever scipy's ``border_value`` convention for the array edge.
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    eroded = ndimage.binary_erosion(padded)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~eroded[inner]


def _surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Pooled symmetric surface distances (mm), 1D float64; both masks must be non-empty.

    Both masks are first cropped to the bounding box of their union: every boundary pixel lies in
    it, Euclidean distances do not depend on the crop, and a pixel on the edge of that box always
    has a background neighbour outside it, so boundaries and distances are exactly those of the
    full grid at a fraction of the cost for small objects in large volumes.
    """
    (bbox,) = ndimage.find_objects((pred | ref).astype(np.uint8))
    p_b = _boundary(pred[bbox])
    r_b = _boundary(ref[bbox])
    # Distance (mm) from every pixel to the nearest boundary pixel of the other mask.
    dist_to_ref = ndimage.distance_transform_edt(~r_b, sampling=spacing)
    dist_to_pred = ndimage.distance_transform_edt(~p_b, sampling=spacing)
    return np.concatenate([dist_to_ref[p_b], dist_to_pred[r_b]]).astype(np.float64, copy=False)


def _distance_stats(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """(HD95, ABD) in mm with the documented empty-mask values."""
    p_any, r_any = bool(pred.any()), bool(ref.any())
    if not p_any and not r_any:
        return 0.0, 0.0
    if p_any != r_any:
        diag = _grid_diagonal(pred.shape, spacing)
        logger.debug("one mask is empty: surface distances set to the grid diagonal %.3f mm", diag)
        return diag, diag
    d = _surface_distances(pred, ref, spacing)
    return float(np.percentile(d, 95)), float(d.mean())


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2|P∩R| / (|P|+|R|)`` in [0, 1]; 1.0 when both masks are empty.

    Args:
        pred, ref: masks of equal shape, 2D (y, x) or 3D (z, y, x), bool or non-zero = foreground.
    """
    p, r = _check_pair(pred, ref)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(p & r) / total)


def centroid_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Absolute centroid difference along each axis in mm (the paper's CD).

    Args:
        pred, ref: masks of equal shape, 2D (y, x) or 3D (z, y, x).
        spacing: pixel size in mm in the same axis order as the arrays.

    Returns:
        ``{"x": ..., "y": ..., "z": ...}`` floats in mm; ``"z"`` is 0.0 for 2D masks. Both empty:
        all 0.0; exactly one empty: the grid extent ``shape_i * spacing_i`` along each axis.
    """
    p, r = _check_pair(pred, ref)
    sp = _check_spacing(spacing, p.ndim)
    names = _AXIS_NAMES_3D[-p.ndim :]
    out = {"x": 0.0, "y": 0.0, "z": 0.0}
    p_any, r_any = bool(p.any()), bool(r.any())
    if not p_any and not r_any:
        return out
    if p_any != r_any:
        out.update({n: float(e) for n, e in zip(names, _grid_extent(p.shape, sp), strict=True)})
        return out
    # center_of_mass works in index units (array order); scale each axis to mm.
    c_p = np.asarray(ndimage.center_of_mass(p), dtype=np.float64)
    c_r = np.asarray(ndimage.center_of_mass(r), dtype=np.float64)
    diff = np.abs(c_p - c_r) * np.asarray(sp)
    out.update({n: float(d) for n, d in zip(names, diff, strict=True)})
    return out


def hausdorff95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th percentile (mm) of the pooled symmetric surface distances (see module docstring).

    Args:
        pred, ref: masks of equal shape, 2D (y, x) or 3D (z, y, x).
        spacing: pixel size in mm in the same axis order as the arrays.

    Returns:
        HD95 in mm; 0.0 when both are empty, the grid diagonal in mm when exactly one is.
    """
    p, r = _check_pair(pred, ref)
    sp = _check_spacing(spacing, p.ndim)
    return _distance_stats(p, r, sp)[0]


def average_boundary_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """ABD: mean (mm) of the pooled symmetric surface distances (see module docstring).

    Args:
        pred, ref: masks of equal shape, 2D (y, x) or 3D (z, y, x).
        spacing: pixel size in mm in the same axis order as the arrays.

    Returns:
        ABD in mm; 0.0 when both are empty, the grid diagonal in mm when exactly one is.
    """
    p, r = _check_pair(pred, ref)
    sp = _check_spacing(spacing, p.ndim)
    return _distance_stats(p, r, sp)[1]


def relative_volume_difference(pred: np.ndarray, ref: np.ndarray) -> float:
    """aRVD = ``|Vp - Vr| / Vr`` as a fraction (not %), >= 0 and not capped when ``ref`` is non-empty.

    Spacing cancels in the ratio, so pixel counts are used. Both empty: 0.0; ``pred`` empty:
    1.0 (exact); ``ref`` empty and ``pred`` not: 1.0 (capped, the ratio being undefined).
    """
    p, r = _check_pair(pred, ref)
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    if n_r == 0:
        return 0.0 if n_p == 0 else 1.0
    return float(abs(n_p - n_r) / n_r)


def evaluate_masks(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """All metrics for one (pred, ref) pair, as plain finite Python floats.

    Args:
        pred, ref: masks of equal shape, 2D (y, x) or 3D (z, y, x).
        spacing: pixel size in mm in the same axis order as the arrays.

    Returns:
        Keys ``"dice"``; ``"cd_x"``, ``"cd_y"``, ``"cd_z"`` (mm, ``cd_z`` 0.0 for 2D); ``"hd95"``,
        ``"abd"`` (mm); ``"arvd"`` (fraction); ``"size_pred"``, ``"size_ref"``: foreground size in
        physical units, mm³ for 3D masks and mm² for 2D masks.
    """
    p, r = _check_pair(pred, ref)
    sp = _check_spacing(spacing, p.ndim)
    cd = centroid_distance(p, r, sp)
    hd95, abd = _distance_stats(p, r, sp)
    pixel_size = math.prod(sp)
    return {
        "dice": dice(p, r),
        "cd_x": cd["x"],
        "cd_y": cd["y"],
        "cd_z": cd["z"],
        "hd95": hd95,
        "abd": abd,
        "arvd": relative_volume_difference(p, r),
        "size_pred": float(np.count_nonzero(p) * pixel_size),
        "size_ref": float(np.count_nonzero(r) * pixel_size),
    }


def mask_click(mask: np.ndarray) -> tuple[float, float]:
    """The click for a 2D object: its mass centre, or the nearest mask pixel if the centre is outside.

    mask: (H, W) bool or non-zero = foreground, not empty. Returns (y, x) float slice pixels.
    """
    m = np.asarray(mask) != 0
    if not m.any():
        raise InputError("cannot place a click on an empty mask")
    cy, cx = (float(v) for v in ndimage.center_of_mass(m))
    if m[int(round(cy)), int(round(cx))]:
        return cy, cx
    ys, xs = np.nonzero(m)
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(ys[k]), float(xs[k])
