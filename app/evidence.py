"""Whether a method found an object at the click, from its own answer and the image it read: a pure
function of arrays, so the page can say "no object here" instead of drawing a contour nobody asked for.

Both networks were trained on clicks inside objects, so they answer every click with something. Two
signs that the something is not an object:

* its likelihood never reaches the threshold within :data:`NEAR_MM` of the click (the mask kept is
  then a component elsewhere, or nothing);
* the mask has no edge in the image: the median intensity of its inside and of a ring just outside it
  differ by less than :data:`MIN_CONTRAST` of the window (a blob drawn in air, or in flat tissue). The
  ring widens with the mask (:data:`RING_FRACTION`): a large object's contour may lie a few mm inside
  its edge, and a ring as thin as a small one's would then compare the object with itself.

Arrays are (y, x) slices on the volume's grid; spacing is (y, x) in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["MIN_CONTRAST", "NEAR_MM", "RING_FRACTION", "RING_MM", "no_object_reason"]

#: The likelihood must reach the threshold this close to the click (mm).
NEAR_MM = 3.0
#: The ring outside the mask compared with its inside: from RING_MM[0] to RING_MM[1] mm off its edge
#: (the first mm skipped: partial volume and the contour's own pixel).
RING_MM = (1.0, 4.0)
#: The ring's outer edge reaches at least this fraction of the mask's equivalent radius (the radius of
#: a disc of its area) off its contour: 10 mm for an 80-mm-wide mask, RING_MM[1] below 32 mm.
RING_FRACTION = 0.25
#: Least difference of medians, inside against the ring, in units of the window's width (0 to 1). The
#: bundled objects show 0.06 to 0.5; clicks in air or flat tissue 0.00 to 0.01.
MIN_CONTRAST = 0.02


def no_object_reason(
    windowed: np.ndarray,
    likelihood: np.ndarray,
    coverage: np.ndarray,
    mask: np.ndarray,
    click_yx: Sequence[float],
    threshold: float,
    spacing_yx: Sequence[float],
) -> str | None:
    """Why no object was found at the click, in one line, or None when the mask is an object.

    windowed: (H, W) the slice in the window the method read, in [0, 1]; likelihood, coverage: (H, W)
    float, the method's fused likelihood and where its patches reached; mask: (H, W) bool, its
    thresholded answer; click_yx: slice pixels; spacing_yx: mm per pixel.
    """
    sy, sx = float(spacing_yx[0]), float(spacing_yx[1])
    h, w = likelihood.shape
    cy, cx = float(click_yx[0]), float(click_yx[1])
    ry, rx = int(np.ceil(NEAR_MM / sy)), int(np.ceil(NEAR_MM / sx))
    y0, y1 = max(0, int(round(cy)) - ry), min(h, int(round(cy)) + ry + 1)
    x0, x1 = max(0, int(round(cx)) - rx), min(w, int(round(cx)) + rx + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    near = np.hypot((yy - cy) * sy, (xx - cx) * sx) <= NEAR_MM
    reached = (likelihood[y0:y1, x0:x1] >= threshold) & (coverage[y0:y1, x0:x1] > 1e-6)
    if not (reached & near).any():
        return f"its likelihood stays below the threshold {threshold:.2f} within {NEAR_MM:g} mm of the click"
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return "nothing passes the threshold"
    outside = ndimage.distance_transform_edt(~mask, sampling=(sy, sx))
    radius_mm = float(np.sqrt(mask.sum() * sy * sx / np.pi))
    ring = (outside > RING_MM[0]) & (outside <= max(RING_MM[1], RING_FRACTION * radius_mm))
    inside = ndimage.distance_transform_edt(mask, sampling=(sy, sx))
    core = mask & (inside > RING_MM[0])
    core = core if core.sum() >= 4 else mask
    if not ring.any():  # the mask fills the slice: no outside to compare with
        return None
    contrast = abs(float(np.median(windowed[core])) - float(np.median(windowed[ring])))
    if contrast < MIN_CONTRAST:
        return (
            f"the image inside its contour and just outside it differ by {100 * contrast:.1f} % of the "
            f"window (no edge)"
        )
    return None
