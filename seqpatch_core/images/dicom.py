"""DICOM headers: the series among a set of files, the check that one is a regular volume, its slice order.

:mod:`seqpatch_core.images.io` reads DICOM through this module. Headers are read with pydicom (no pixel
data); the series are grouped by SeriesInstanceUID and sorted along the slice normal, and odd stacks
(mixed slice sizes or orientations, several slices at one position, gaps, uneven spacing, gantry tilt)
are refused with one line rather than read into a distorted volume. The pixels of a classic
single-frame series are then decoded by SimpleITK (GDCM: every common transfer syntax) in the order
chosen here; those of an enhanced multi-frame CT/MR instance by pydicom through highdicom, with each
frame's pixel value transformation.

What a DICOM Segmentation needs later, the source instances' headers in the volume's slice order, is
kept in :class:`DicomSource` (``Volume.dicom``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from seqpatch_core.base.errors import InputError, first_line

__all__ = ["SEG_SOP_CLASS", "DicomSource", "Series", "multiframe_image", "scan", "slice_order", "text"]

log = logging.getLogger(__name__)

#: Segmentation Storage.
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: A slice whose in-plane offset from its neighbour exceeds this angle to the normal is tilted (degrees).
_TILT_DEG = 0.5
#: Slice steps may differ from their median by this much (mm) or this fraction, whichever is larger.
_STEP_ATOL_MM, _STEP_RTOL = 0.02, 0.02
#: Orientation cosines of two slices of one stack differ by at most this much.
_ORIENTATION_ATOL = 1e-3


def text(ds: Dataset, keyword: str) -> str:
    """An attribute's value as stripped text; "" when absent or empty (as anonymisers leave UIDs)."""
    return str(ds.get(keyword, "") or "").strip()


@dataclass(frozen=True)
class DicomSource:
    """The DICOM instances a :class:`~seqpatch_core.images.volume.Volume` was read from, in its slice order.

    Attributes:
        instances: the instances' headers (pydicom Datasets, no pixel data, no private tags): one per z
            slice for a classic series; the one instance for an enhanced multi-frame image.
        frames: for a multi-frame instance, the 1-based frame number of each z slice; empty otherwise.
        series_uid: the SeriesInstanceUID ("" when the files leave it empty).
        repairs: what the reader filled in, one line each (e.g. SOPInstanceUID taken from the file meta).
    """

    instances: tuple[Dataset, ...]
    frames: tuple[int, ...] = ()
    series_uid: str = ""
    repairs: tuple[str, ...] = ()

    @property
    def multiframe(self) -> bool:
        return bool(self.frames)


@dataclass
class Series:
    """One series found among the files, with what choosing and checking it needs; no pixel is read.

    ``kind`` is "image" (classic: one file per slice), "multiframe" (one enhanced CT/MR instance) or
    "seg" (a DICOM Segmentation). ``files`` and ``headers`` are in the same order (file names).
    """

    uid: str
    kind: str
    files: list[Path]
    headers: list[Dataset]
    repairs: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        """Slices of the volume it makes: one per file, or a multi-frame file's frames."""
        return sum(int(h.get("NumberOfFrames", 1) or 1) for h in self.headers)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        h = self.headers[0]
        return int(h.Columns), int(h.Rows), self.n_slices

    @property
    def modality(self) -> str | None:
        return text(self.headers[0], "Modality") or None

    @property
    def transfer_syntax(self) -> str:
        """The first file's transfer syntax by name, for messages."""
        meta = getattr(self.headers[0], "file_meta", None)
        uid = meta.get("TransferSyntaxUID") if meta is not None else None
        return UID(uid).name if uid else "unknown transfer syntax"

    def describe(self) -> str:
        """E.g. ``1.2.840.1 (CT, 20 slices, "Thorax 1.0 B31f")``: how a message names the series."""
        desc = text(self.headers[0], "SeriesDescription")
        what = ", ".join(x for x in (self.modality, f"{self.n_slices} slices", f'"{desc}"' if desc else "") if x)
        return f"{self.uid or '(no series UID)'} ({what})"


def _looks_like_dicom_without_preamble(path: Path) -> bool:
    """A DICOM stream without the 128-byte preamble starts with group 0002 or 0008 (little endian)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) in (b"\x02\x00", b"\x08\x00")
    except OSError:
        return False


def _header(path: Path) -> Dataset | None:
    """The file's DICOM header without pixel data and private tags, or None when it is not DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        if not _looks_like_dicom_without_preamble(path):
            return None
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # pydicom raises many types on data that is not DICOM after all
            return None
    except Exception:  # damaged after a valid preamble: not a usable DICOM file
        return None
    # Private tags (e.g. a scanner's CSA headers, tens of kB per slice) serve no reader or writer here.
    ds.remove_private_tags()
    return ds


def _repair_sop_uids(ds: Dataset) -> list[str]:
    """Fills SOPClassUID / SOPInstanceUID from the file meta when the dataset leaves them empty."""
    done = []
    meta = getattr(ds, "file_meta", None)
    for key, meta_key in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if text(ds, key):
            continue
        value = text(meta, meta_key) if meta is not None else ""
        if value:
            setattr(ds, key, UID(value))
            done.append(key)
    return done


def _kind(ds: Dataset) -> str | None:
    if text(ds, "SOPClassUID") == SEG_SOP_CLASS or text(ds, "Modality") == "SEG":
        return "seg"
    if "Rows" not in ds or "Columns" not in ds:
        return None  # no image: a structured report, presentation state, DICOMDIR, ...
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        return "multiframe"
    return "image"


def scan(files: Iterable[Path]) -> list[Series]:
    """Every DICOM series among ``files`` (non-DICOM files are skipped), in first-seen order.

    Classic images are grouped by SeriesInstanceUID; each multi-frame or SEG instance is a series of
    its own. SOPClassUID / SOPInstanceUID left empty in a dataset are taken from its file meta (and
    the series' ``repairs`` say so).
    """
    groups: dict[str, Series] = {}  # classic images by series UID
    singles: list[Series] = []
    repaired: dict[str, dict[str, int]] = {}  # series UID -> attribute -> datasets repaired
    for path in sorted(Path(f) for f in files):
        ds = _header(path)
        if ds is None:
            continue
        fixed = _repair_sop_uids(ds)
        kind = _kind(ds)
        if kind is None:
            continue
        uid = text(ds, "SeriesInstanceUID")
        if kind == "image":
            s = groups.setdefault(uid, Series(uid, kind, [], []))
            s.files.append(path)
            s.headers.append(ds)
            counts = repaired.setdefault(uid, {})
            for k in fixed:
                counts[k] = counts.get(k, 0) + 1
        else:
            s = Series(uid, kind, [path], [ds])
            s.repairs = [f"{k} was empty in the dataset: taken from the file meta" for k in fixed]
            singles.append(s)
    for key, s in groups.items():
        s.repairs = [
            f"{k} was empty in {n} of {len(s.files)} datasets: taken from their file meta"
            for k, n in repaired[key].items()
        ]
    return [*groups.values(), *singles]


def _floats(value, n: int) -> np.ndarray | None:
    try:
        a = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a if a.shape == (n,) and np.isfinite(a).all() else None


def _stack_order(positions: list[np.ndarray | None], orientations: list[np.ndarray | None], what: str) -> np.ndarray:
    """The order of slices along their normal (ascending), after checking they form a regular volume.

    Args:
        positions: ImagePositionPatient of each slice (3 floats, LPS mm), None where absent.
        orientations: ImageOrientationPatient of each slice (6 direction cosines), None where absent.
        what: how messages name the series.

    Returns:
        int array: slice indices in volume order (z = 0 first).

    Raises:
        InputError: one line naming the irregularity (refused rather than read into a distorted volume).
    """
    n = len(positions)
    if n == 1:
        return np.zeros(1, dtype=int)
    if any(p is None for p in positions) or any(o is None for o in orientations):
        raise InputError(f"{what}: slices without a position or orientation cannot be stacked into a volume")
    iop = np.stack(orientations)
    if np.abs(iop - iop[0]).max() > _ORIENTATION_ATOL:
        raise InputError(f"{what}: its slices have different orientations (several stacks in one series?)")
    normal = np.cross(iop[0, :3], iop[0, 3:])
    pos = np.stack(positions)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    same = int(np.count_nonzero(steps < _STEP_ATOL_MM))
    if same:
        raise InputError(
            f"{what}: {n} slices at only {n - same} distinct positions "
            "(several acquisitions, echoes or time points in one series?)"
        )
    lateral = np.linalg.norm(np.diff(pos[order], axis=0) - steps[:, None] * normal, axis=1)
    tilt = float(np.degrees(np.arctan2(lateral, steps)).max())
    if tilt > _TILT_DEG:
        raise InputError(
            f"{what}: the slices are shifted sideways along the stack by {tilt:.1f}° (gantry tilt); "
            "resample it to an orthogonal grid first"
        )
    step = float(np.median(steps))
    off = np.abs(steps - step)
    if off.max() > max(_STEP_ATOL_MM, _STEP_RTOL * step):
        i = int(off.argmax())
        if steps[i] > 1.5 * step:
            raise InputError(
                f"{what}: a gap of {steps[i]:.3g} mm after slice {i + 1} of {n} where the others are "
                f"{step:.3g} mm apart (a missing slice?)"
            )
        raise InputError(f"{what}: uneven slice spacing, {steps.min():.3g} to {steps.max():.3g} mm")
    return order


def slice_order(series: Series, what: str) -> tuple[list[Path], DicomSource]:
    """The files of a classic series in volume order (ascending along the normal), with its source.

    Raises:
        InputError: mixed slice sizes, or an irregular stack (see :func:`_stack_order`).
    """
    sizes: dict[tuple[int, int], int] = {}
    for h in series.headers:
        key = (int(h.Columns), int(h.Rows))
        sizes[key] = sizes.get(key, 0) + 1
    if len(sizes) > 1:
        listed = ", ".join(f"{c}×{r} ({k} slices)" for (c, r), k in sorted(sizes.items(), key=lambda kv: -kv[1]))
        raise InputError(f"{what}: mixes slice sizes: {listed}")
    if len(series.files) > 1 and any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in series.headers):
        raise InputError(f"{what}: mixes multi-frame files with slices")
    order = _stack_order(
        [_floats(h.get("ImagePositionPatient"), 3) for h in series.headers],
        [_floats(h.get("ImageOrientationPatient"), 6) for h in series.headers],
        what,
    )
    # One multi-frame file without functional groups (GDCM reads its frames in stored order).
    frames = tuple(range(1, series.n_slices + 1)) if series.n_slices > len(series.files) else ()
    source = DicomSource(
        instances=tuple(series.headers[i] for i in order),
        frames=frames,
        series_uid=series.uid,
        repairs=tuple(series.repairs),
    )
    return [series.files[i] for i in order], source


def _frame_item(ds: Dataset, index: int, sequence: str, attribute: str):
    """``attribute`` of a functional group, per-frame (frame ``index``, 0-based) or else shared."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        try:
            return getattr(getattr(ds, groups)[i], sequence)[0].get(attribute)
        except (AttributeError, IndexError):
            continue
    return None


def multiframe_image(series: Series, what: str) -> tuple[np.ndarray, dict, DicomSource]:
    """Decodes an enhanced multi-frame CT/MR instance into a volume.

    Returns:
        (array, geometry, source): float32 (z, y, x) array of real values (each frame's modality
        transform applied: HU for CT); geometry ``{"spacing": (x, y, z) mm, "origin": (x, y, z),
        "direction": 9 floats row-major}`` in SimpleITK's conventions; the instance and its frame
        numbers in z order.

    Raises:
        InputError: an irregular stack, or pixel data no installed decoder reads.
    """
    import highdicom as hd
    from pydicom.pixels import get_decoder

    path = series.files[0]
    header = series.headers[0]
    n = series.n_slices
    positions = [_floats(_frame_item(header, i, "PlanePositionSequence", "ImagePositionPatient"), 3) for i in range(n)]
    orientations = [
        _floats(_frame_item(header, i, "PlaneOrientationSequence", "ImageOrientationPatient"), 6) for i in range(n)
    ]
    order = _stack_order(positions, orientations, what)
    if positions[0] is None or orientations[0] is None:
        raise InputError(f"{what}: the multi-frame image has no frame position or orientation")
    spacing_rc = _floats(_frame_item(header, int(order[0]), "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing_rc is None or (spacing_rc <= 0).any():
        raise InputError(f"{what}: the multi-frame image has no pixel spacing")
    ds = pydicom.dcmread(path)
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed and not get_decoder(syntax).is_available:
        raise InputError(f"{what}: no installed decoder reads its pixel data ({syntax.name}, {syntax})")
    image = hd.Image.from_dataset(ds, copy=False)
    try:
        frames = [
            image.get_frame(int(i) + 1, dtype=np.float32, apply_real_world_transform=False) for i in order
        ]
    except Exception as exc:  # a decoder's own error, whatever its type
        raise InputError(f"{what}: cannot decode its pixel data ({syntax.name}): {first_line(exc)}") from None
    iop = orientations[int(order[0])]
    normal = np.cross(iop[:3], iop[3:])
    along = [positions[int(i)] @ normal for i in order]
    step = float(np.median(np.diff(along))) if n > 1 else 1.0
    geometry = {
        "spacing": (float(spacing_rc[1]), float(spacing_rc[0]), step),
        "origin": tuple(float(v) for v in positions[int(order[0])]),
        # SimpleITK's direction columns are the x (along a row), y (down a column) and z axes.
        "direction": tuple(float(v) for v in np.column_stack([iop[:3], iop[3:], normal]).ravel()),
    }
    source = DicomSource(
        instances=(header,),
        frames=tuple(int(i) + 1 for i in order),
        series_uid=series.uid,
        repairs=tuple(series.repairs),
    )
    return np.stack(frames), geometry, source
