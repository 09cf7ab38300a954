"""How a volume is shown the right way up: the radiological convention, for display only.

A :class:`~seqpatch_core.images.volume.Volume` keeps its array in the file's own voxel order
``(z, y, x)``, and so does everything that computes (clicks, masks, exports). Only a picture on screen
is turned: each of the three array planes (the one across array axis 0, 1 or 2) is shown as its
physical plane is read in radiology:

============  =====================  ====================
plane         rows (top → bottom)    columns (left → right)
============  =====================  ====================
axial         anterior → posterior   patient's right → left
coronal       superior → inferior    patient's right → left
sagittal      superior → inferior    anterior → posterior
============  =====================  ====================

The plane is named by the physical axis nearest to its normal, so the slices of a sagittally acquired
MR (array axis 0 pointing left–right) are called sagittal. Oblique volumes are shown by their nearest
axes, as SimpleITK's ``DICOMOrientImageFilter`` names them: no resampling, only an exchange and
reversal of array axes, so each display pixel is one voxel and maps back to it exactly.

Coordinates: a *plane* is a 2D array (or a (..., 2) point) in voxel order, its two array axes in
ascending order (axis 0's plane is (y, x), axis 1's (z, x), axis 2's (z, y)); a *display* picture or
point is (row, column), top-left first. Points are continuous voxel indices (pixel centres at integers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PLANE_NAMES", "Orientation", "PlaneDisplay", "orientation"]

#: The physical planes, by the LPS axis (0 = x: R→L, 1 = y: A→P, 2 = z: I→S) normal to them.
PLANE_NAMES = ("sagittal", "coronal", "axial")
# DICOM's letters: where an axis points (LPS positive), and its opposite.
_TOWARD = "LPS"
_AWAY = "RAI"
# Per plane name, the screen's (rows, columns) as (LPS axis, sign): +1 when going down / right walks
# toward L, P or S, -1 toward R, A or I. Radiological: the viewer faces the patient (right on the left),
# looks at axial slices from the feet, and at sagittal ones from the patient's left (anterior left).
_SCREEN = {
    "axial": ((1, +1), (0, +1)),
    "coronal": ((2, -1), (0, +1)),
    "sagittal": ((2, -1), (1, +1)),
}


def _letter(axis: int, sign: int) -> str:
    return (_TOWARD if sign > 0 else _AWAY)[axis]


@dataclass(frozen=True)
class PlaneDisplay:
    """How the plane across one array axis is shown.

    Attributes:
        normal: the array axis held fixed (0 = z, 1 = y, 2 = x of the (z, y, x) array).
        name: "axial", "coronal" or "sagittal" (the physical plane nearest to it).
        axes: the array axes shown as (rows, columns), e.g. (2, 1) when rows run along x.
        flips: whether the display's rows / columns run against those array axes.
        letters: the patient directions at the picture's (top, bottom, left, right) edges, one letter
            each ("A", "P", "R", "L", "S", "I").
    """

    normal: int
    name: str
    axes: tuple[int, int]
    flips: tuple[bool, bool]
    letters: tuple[str, str, str, str]

    @property
    def transposed(self) -> bool:
        """Whether display rows run along the plane's second (higher) array axis."""
        return self.axes[0] > self.axes[1]

    def plane_axes(self) -> tuple[int, int]:
        """The plane's array axes in voxel order (ascending)."""
        return tuple(sorted(self.axes))  # type: ignore[return-value]

    def plane_shape(self, volume_shape: Sequence[int]) -> tuple[int, int]:
        """(a, b) voxel-order shape of this plane of a (z, y, x) volume."""
        a, b = self.plane_axes()
        return int(volume_shape[a]), int(volume_shape[b])

    def display_shape(self, volume_shape: Sequence[int]) -> tuple[int, int]:
        """(rows, columns) of this plane on screen for a (z, y, x) volume."""
        return int(volume_shape[self.axes[0]]), int(volume_shape[self.axes[1]])

    def display_spacing(self, spacing_zyx: Sequence[float]) -> tuple[float, float]:
        """(row, column) pixel size in mm on screen, from the volume's (z, y, x) spacing."""
        return float(spacing_zyx[self.axes[0]]), float(spacing_zyx[self.axes[1]])

    def take(self, array: np.ndarray, index: int) -> np.ndarray:
        """The voxel-order plane at ``index`` along :attr:`normal` of a (z, y, x, ...) array (a view)."""
        return array[(slice(None),) * self.normal + (int(index),)]

    def to_display(self, plane: np.ndarray) -> np.ndarray:
        """A voxel-order plane (a, b, ...) (any dtype; trailing axes such as RGB kept) as shown:
        (rows, columns, ...). A view, no copy."""
        out = np.swapaxes(plane, 0, 1) if self.transposed else plane
        return out[:: -1 if self.flips[0] else 1, :: -1 if self.flips[1] else 1]

    def points_to_display(self, points: np.ndarray, plane_shape: Sequence[int]) -> np.ndarray:
        """(..., 2) voxel-order plane points (a, b) → display (row, column), float64.

        ``plane_shape`` is the voxel-order plane's (a, b) size (:meth:`plane_shape`); a reversed axis
        maps index ``i`` to ``n - 1 - i``, so pixel centres stay pixel centres.
        """
        p = np.asarray(points, dtype=np.float64)
        n = np.asarray(plane_shape, dtype=np.float64)
        if self.transposed:
            p, n = p[..., ::-1], n[::-1]
        flips = np.asarray(self.flips)
        return np.where(flips, n - 1.0 - p, p)

    def points_to_plane(self, points: np.ndarray, plane_shape: Sequence[int]) -> np.ndarray:
        """(..., 2) display points (row, column) → voxel-order plane points (a, b), float64: the
        inverse of :meth:`points_to_display` (``plane_shape`` as there)."""
        p = np.asarray(points, dtype=np.float64)
        n = np.asarray(plane_shape, dtype=np.float64)
        if self.transposed:
            n = n[::-1]
        p = np.where(np.asarray(self.flips), n - 1.0 - p, p)
        return p[..., ::-1] if self.transposed else p


@dataclass(frozen=True)
class Orientation:
    """How a volume's three array planes are shown (:func:`orientation`).

    Attributes:
        code: where the image's x, y, z index axes point, DICOM letters (e.g. "LPS", "LAS", "PSL").
        planes: the display of the plane across array axis 0, 1 and 2 ((z, y, x) numbering), in that
            order; ``planes[0]`` is the one a viewer scrolls through (the stored slices).
    """

    code: str
    planes: tuple[PlaneDisplay, PlaneDisplay, PlaneDisplay]

    @property
    def slices(self) -> PlaneDisplay:
        """The stored slices (array axis 0), the plane that is scrolled."""
        return self.planes[0]

    def plane(self, name: str) -> PlaneDisplay:
        """The array plane shown as ``name`` ("axial", "coronal" or "sagittal")."""
        for p in self.planes:
            if p.name == name:
                return p
        raise ValueError(f"no plane named {name!r}; planes are {', '.join(PLANE_NAMES)}")


def orientation(direction: Sequence[float]) -> Orientation:
    """The display of a volume whose direction cosines are ``direction``.

    Args:
        direction: 9 floats, SimpleITK's row-major 3×3 matrix (columns = the image's x, y, z axes in
            physical LPS), as :attr:`Volume.direction <seqpatch_core.images.volume.Volume.direction>`.
    """
    import SimpleITK as sitk  # display only: the volume type itself needs no SimpleITK

    # DICOMOrientImageFilter's rule for the nearest axes (always three different ones, even for a
    # degenerate matrix); its letters say where each index axis points.
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(d) for d in direction])
    # (LPS axis, sign) of array axes z, y, x (image axes z, y, x are letters 2, 1, 0)
    toward = []
    for letter in reversed(code):
        k = _TOWARD.find(letter)
        toward.append((k, +1) if k >= 0 else (_AWAY.index(letter), -1))
    planes = []
    for normal in range(3):
        name = PLANE_NAMES[toward[normal][0]]
        in_plane = [a for a in range(3) if a != normal]
        axes, flips = [], []
        for k, sign in _SCREEN[name]:
            a = next(a for a in in_plane if toward[a][0] == k)
            axes.append(a)
            flips.append(toward[a][1] != sign)
        (rk, rs), (ck, cs) = _SCREEN[name]
        letters = (_letter(rk, -rs), _letter(rk, rs), _letter(ck, -cs), _letter(ck, cs))
        planes.append(PlaneDisplay(normal, name, (axes[0], axes[1]), (flips[0], flips[1]), letters))
    return Orientation(code, (planes[0], planes[1], planes[2]))
