"""The image type: :class:`Volume`, the ONE place that owns axis order, and its validation.

Everywhere in SeqPatch an image is a :class:`Volume` whose ``array`` is float32, C-contiguous,
indexed ``(z, y, x)``, and whose ``spacing`` is given in the same ``(z, y, x)`` order in mm.
SimpleITK indexes ``(x, y, z)``; the conversion happens here (:meth:`Volume.to_sitk`,
:func:`volume_from_sitk`) and nowhere else. ``origin`` and ``direction`` are kept exactly as SimpleITK
gives them (physical x, y, z, LPS), so a mask written with :func:`seqpatch_core.images.io.write_mask` lies on
the image in any viewer.

Files are read and written in :mod:`seqpatch_core.images.io`. Every refusal is an
:class:`~seqpatch_core.base.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from seqpatch_core.base.errors import InputError

if TYPE_CHECKING:  # SimpleITK is imported where geometry is converted, so that training and the
    # background bank (on machines without it) can use the Volume type and the CT rule
    import SimpleITK as sitk

    from seqpatch_core.images.dicom import DicomSource

__all__ = ["MIN_INPLANE", "Volume", "volume_from_array", "volume_from_sitk"]

log = logging.getLogger(__name__)

#: Smallest in-plane size (y and x) worth segmenting; smaller images are refused.
MIN_INPLANE = 8
#: Intensities at or below this are air in Hounsfield units: an image reaching it is CT,
#: whatever its tag says.
CT_AIR_HU = -500.0

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_MODALITIES = ("CT", "MR", "unknown")
# Rec. 601 luma, the weights PIL's "L" mode uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Volume:
    """A 3D image in SeqPatch's frame.

    Attributes:
        array: float32, C-contiguous, shape (z, y, x); finite and not constant.
        spacing: voxel size in mm, (z, y, x) order.
        origin: physical position (mm) of voxel (0, 0, 0), SimpleITK's (x, y, z) order.
        direction: 9 floats, SimpleITK's row-major 3×3 direction cosines (columns = x, y, z axes).
        modality: "CT", "MR" or "unknown".
        source: short human description, e.g. ``"lung2_image.nrrd (NRRD)"``.
        warnings: what the reader changed and the user should be told, one line each.
        dicom: the DICOM instances it was read from, in slice order (what a DICOM SEG references);
            None for other formats and for arrays.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY
    modality: str = "unknown"
    source: str = "array"
    warnings: list[str] = field(default_factory=list)
    dicom: DicomSource | None = None

    @property
    def is_ct(self) -> bool:
        """CT by its tag, or by :func:`looks_like_ct` on the intensities when the tag says nothing."""
        return self.modality == "CT" or looks_like_ct(self.array.min())

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) size in voxels."""
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    def _geometry_image(self, size_xyz: Sequence[int] = (1, 1, 1)) -> sitk.Image:
        import SimpleITK as sitk

        img = sitk.Image([int(s) for s in size_xyz], sitk.sitkUInt8)
        img.SetSpacing(tuple(float(s) for s in reversed(self.spacing)))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction))
        return img

    def index_to_physical(self, zyx: Sequence[float]) -> tuple[float, float, float]:
        """Physical point (x, y, z) in mm of a continuous (z, y, x) voxel index.

        Same result as SimpleITK's ``TransformContinuousIndexToPhysicalPoint`` on the (x, y, z) index.
        """
        if len(zyx) != 3:
            raise InputError(f"a point needs 3 coordinates (z, y, x), got {len(zyx)}")
        z, y, x = (float(v) for v in zyx)
        p = self._geometry_image().TransformContinuousIndexToPhysicalPoint((x, y, z))
        return float(p[0]), float(p[1]), float(p[2])

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image with this volume's geometry.

        Args:
            array: (z, y, x) array of this volume's shape (bool is stored as uint8); default the
                volume's own array.
        """
        a = self.array if array is None else np.asarray(array)
        if a.shape != self.shape:
            raise InputError(f"array shape {a.shape} differs from the volume's {self.shape} (z, y, x)")
        if a.dtype == bool:
            a = a.astype(np.uint8)
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(a))
        img.SetSpacing(tuple(float(s) for s in reversed(self.spacing)))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction))
        return img

    def summary(self) -> str:
        """One line: size (x×y×z), spacing, modality and intensity range."""
        z, y, x = self.shape
        sz, sy, sx = self.spacing
        lo, hi = float(self.array.min()), float(self.array.max())
        return (
            f"{x}×{y}×{z} voxels (x×y×z), spacing {sx:.3g}×{sy:.3g}×{sz:.3g} mm, {self.modality}, "
            f"intensity {lo:.6g} to {hi:.6g}"
        )


def looks_like_ct(minimum: float) -> bool:
    """Whether an image whose smallest intensity is ``minimum`` is CT: it reaches air in Hounsfield
    units. The one place this rule is written: the readers, the background bank and the window
    choice use it."""
    return float(minimum) <= CT_AIR_HU


def _validate_array(arr: np.ndarray, warnings: list[str], *, allow_constant: bool = False) -> np.ndarray:
    """Checks and cleans a (z, y, x) array; returns it float32 and C-contiguous."""
    if arr.ndim != 3:
        raise InputError(f"expected a 2D or 3D image, got {arr.ndim} dimensions")
    if arr.size == 0 or 0 in arr.shape:
        z, y, x = arr.shape
        raise InputError(f"the image is empty (size {x}×{y}×{z})")
    z, y, x = arr.shape
    if y < MIN_INPLANE or x < MIN_INPLANE:
        raise InputError(
            f"the image is too small to segment: {x}×{y} in-plane, at least {MIN_INPLANE}×{MIN_INPLANE} needed"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            raise InputError("the image has no finite voxels (all NaN or Inf)")
        bad = int(arr.size - np.count_nonzero(finite))
        lo = float(arr[finite].min())
        if not arr.flags.writeable:
            arr = arr.copy()
        arr[~finite] = lo
        warnings.append(f"replaced {bad} NaN/Inf voxels with the minimum ({lo:.6g})")
    if not allow_constant:
        lo, hi = float(arr.min()), float(arr.max())
        if lo == hi:
            raise InputError(f"the image is constant (all voxels = {lo:.6g}): nothing to segment")
    return arr


def _guess_modality(arr: np.ndarray, tag: str | None, *, picture: bool) -> str:
    if tag:
        tag = tag.strip().upper()
        return tag if tag in ("CT", "MR") else "unknown"
    lo = float(arr.min())
    if looks_like_ct(lo):
        return "CT"
    if not picture and lo >= 0.0:  # a medical format without CT's negative HU: MR (single slices too)
        return "MR"
    return "unknown"


def volume_from_sitk(
    img: sitk.Image,
    *,
    source: str,
    warnings: list[str],
    modality_tag: str | None = None,
    picture: bool = False,
    allow_constant: bool = False,
) -> Volume:
    """Converts a SimpleITK image of 2 to N dimensions into a validated :class:`Volume`."""
    import SimpleITK as sitk

    dim = img.GetDimension()
    if dim < 2:
        raise InputError(f"expected a 2D or 3D image, got {dim} dimension")
    if dim > 3:
        size = list(img.GetSize())
        n_extra = math.prod(size[3:])
        # Size 0 collapses a dimension; the direction becomes the 3×3 spatial sub-matrix.
        img = sitk.Extract(
            img,
            size=size[:3] + [0] * (dim - 3),
            index=[0] * dim,
            directionCollapseToStrategy=sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX,
        )
        if n_extra > 1:
            warnings.append(f"took the first of {n_extra} volumes of the {dim}D image")
        dim = 3

    ncomp = img.GetNumberOfComponentsPerPixel()
    view = sitk.GetArrayViewFromImage(img)  # (z, y, x[, c]) or (y, x[, c]); no copy yet
    if ncomp > 1:
        if ncomp in (3, 4) and img.GetPixelID() == sitk.sitkVectorUInt8:
            rgb = view[..., :3]
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
                # Grey stored as colour (common for BMP/JPEG): exact, and nothing to tell the user.
                arr = np.array(rgb[..., 0], dtype=np.float32)
            else:
                arr = rgb.astype(np.float32) @ _LUMA
                warnings.append("converted the colour image to grey (luminance)")
        else:
            arr = np.array(view[..., 0], dtype=np.float32)
            warnings.append(f"took the first of {ncomp} components")
    else:
        arr = np.array(view, dtype=np.float32)

    if dim == 2:
        arr = arr[None]
        sx, sy = img.GetSpacing()
        ox, oy = img.GetOrigin()
        d = img.GetDirection()
        spacing = (1.0, float(sy), float(sx))
        origin = (float(ox), float(oy), 0.0)
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    else:
        spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
        origin = tuple(float(o) for o in img.GetOrigin())
        direction = tuple(float(v) for v in img.GetDirection())

    if picture and spacing[1:] == (1.0, 1.0):  # what the readers give when the file says nothing
        warnings.append("a picture file has no pixel size: 1.0 mm pixels assumed (sizes in mm are nominal)")
    arr = _validate_array(arr, warnings, allow_constant=allow_constant)
    modality = _guess_modality(arr, modality_tag, picture=picture)
    for w in warnings:
        log.info("%s: %s", source, w)
    return Volume(arr, spacing, origin, tuple(float(v) for v in direction), modality, source, warnings)


def volume_from_array(
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] = _IDENTITY,
    modality: str = "unknown",
    source: str = "array",
) -> Volume:
    """A validated :class:`Volume` from a (z, y, x) or (y, x) array.

    Args:
        array: real-valued, (z, y, x) or (y, x) (one slice); converted to float32.
        spacing: mm, (z, y, x) order, all > 0.
        origin: mm, SimpleITK's (x, y, z) order.
        direction: 9 direction cosines, SimpleITK's row-major order.
        modality: "CT", "MR" or "unknown" (not guessed).

    Same checks as :func:`read_volume`: constant and too-small arrays are refused, NaN/Inf replaced.
    """
    a = np.asarray(array)
    if a.dtype.kind not in "biuf":
        raise InputError(f"expected a real-valued array, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"expected a 2D or 3D array, got {a.ndim} dimensions")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be 3 positive numbers (z, y, x), got {tuple(spacing)}")
    org = tuple(float(o) for o in origin)
    if len(org) != 3 or not all(math.isfinite(o) for o in org):
        raise InputError(f"origin must be 3 finite numbers (x, y, z), got {tuple(origin)}")
    dirs = tuple(float(d) for d in direction)
    if len(dirs) != 9 or abs(abs(np.linalg.det(np.reshape(dirs, (3, 3)))) - 1.0) > 1e-3:
        raise InputError("direction must be 9 numbers forming a 3×3 rotation (row-major)")
    if modality not in _MODALITIES:
        raise InputError(f"modality must be one of {', '.join(_MODALITIES)}, got {modality!r}")
    warnings: list[str] = []
    arr = _validate_array(a.astype(np.float32, copy=True), warnings)
    return Volume(arr, sp, org, dirs, modality, source, warnings)
