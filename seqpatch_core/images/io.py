"""Reading images and writing masks: files in, :class:`~seqpatch_core.images.volume.Volume` out.

The image type, its (z, y, x) axis order and its validation live in :mod:`seqpatch_core.images.volume`;
this module reads NIfTI, MetaImage, NRRD, DICOM (file, folder or zip) and 2D pictures with SimpleITK,
refuses oversized or damaged files from their headers, and writes masks with the image's exact
geometry (:func:`write_mask`). DICOM series are found, chosen, checked and ordered from their headers
by :mod:`seqpatch_core.images.dicom` (which keeps the source instances for a DICOM SEG, see
:mod:`seqpatch_core.images.dicom_seg`); a DICOM SEG is read as a label through its references.

Every refusal is an :class:`~seqpatch_core.base.errors.InputError` with a one-line message; SimpleITK's
multi-line exceptions never reach the user.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from seqpatch_core.base.errors import InputError, first_line
from seqpatch_core.images import dicom
from seqpatch_core.images.formats import PICTURE_FORMATS, SUPPORTED, VOLUME_FORMATS, VOLUME_SUFFIXES, file_suffix
from seqpatch_core.images.volume import Volume, volume_from_sitk

__all__ = [
    "DEFAULT_MAX_BYTES_ZIP",
    "DEFAULT_MAX_VOXELS",
    "read_label",
    "read_volume",
    "write_mask",
]

#: Largest volume accepted (a 512×512 CT of 1200 slices, 1.2 GB as float32).
DEFAULT_MAX_VOXELS = 512 * 512 * 1200
#: Largest total uncompressed size of a .zip upload.
DEFAULT_MAX_BYTES_ZIP = 2 * 1024**3



# ---------------------------------------------------------------------------------------------
# helpers


def _fmt_size(size_xyz: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in size_xyz)


def _short_cause(exc: BaseException, path: Path | None = None) -> str:
    """One short line out of a SimpleITK/ITK exception (which spans several lines with source paths)."""
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), path.name)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = ""
    for ln in lines:
        if "ERROR:" in ln:
            cause = ln.split("ERROR:", 1)[1].strip()
            break
    if not cause:
        cause = lines[-1] if lines else type(exc).__name__
    cause = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", cause)  # "ImageFileReader(0x55d0...): "
    if "Unable to determine ImageIO reader" in cause or "Could not create IO object" in cause:
        return "not an image file of this format"
    cause = re.sub(r"^Read:\s*", "", cause).rstrip(".: ")
    if re.fullmatch(r"(?i)error reading \S+", cause):  # NRRD's reader names no reason
        return "the image data could not be read (the file is damaged or ends early)"
    return cause if len(cause) <= 120 else cause[:117] + "..."


def _check_size(size_xyz: Sequence[int], max_voxels: int, what: str) -> None:
    """Refuse empty or oversized images from their header, before any voxel is allocated."""
    if any(int(s) <= 0 for s in size_xyz):
        raise InputError(f"{what} is empty (size {_fmt_size(size_xyz)})")
    n = math.prod(int(s) for s in size_xyz)
    if n > max_voxels:
        raise InputError(f"{what} is too large: {_fmt_size(size_xyz)} = {n:,} voxels, the limit is {max_voxels:,}")


def _nifti_expected_bytes(header: bytes) -> int | None:
    """vox_offset + data bytes from a NIfTI-1/-2 header, or None when it cannot be parsed."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            ndim, *dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            ndim, *dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= ndim <= 7 or bitpix <= 0 or offset < 348:  # offset 0: a .hdr/.img pair
        return None
    return offset + math.prod(max(int(d), 1) for d in dims[:ndim]) * bitpix // 8


def _check_nifti_complete(path: Path, gz: bool) -> None:
    """Refuses a truncated NIfTI file: ITK silently fills the missing voxels with zeros."""
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            expected = _nifti_expected_bytes(f.read(540))
    except (OSError, EOFError, zlib.error):
        expected = None  # unreadable header: ITK's own error message is clearer
    if expected is None:
        return
    truncated = InputError(f"{path.name} is truncated: the file ends before the image data does")
    if not gz:
        if path.stat().st_size < expected:
            raise truncated
        return
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    if isize == expected % 2**32:  # gzip trailer: uncompressed size mod 2**32 (single-member file)
        return
    # Multi-member or damaged gzip: decompress once, counting bytes, to be sure.
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        raise truncated from None
    if total < expected:
        raise truncated


# ---------------------------------------------------------------------------------------------
# single files


def _read_file(path: Path, fmt: str, *, max_voxels: int, picture: bool, allow_constant: bool) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read {path.name} as {fmt}: {_short_cause(exc, path)}") from None
    size = reader.GetSize()
    # Every extra dimension and component is read too, so all count against the limit.
    _check_size(size, max_voxels, path.name)
    if math.prod(size) * reader.GetNumberOfComponents() > 4 * max_voxels:
        raise InputError(f"{path.name} has too many components per voxel ({reader.GetNumberOfComponents()})")
    if fmt == "NIfTI":
        _check_nifti_complete(path, gz=path.name.lower().endswith(".gz"))
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read {path.name} as {fmt} (damaged or truncated?): {_short_cause(exc, path)}"
        ) from None
    return volume_from_sitk(
        img,
        source=f"{path.name} ({fmt})",
        warnings=[],
        picture=picture,
        allow_constant=allow_constant,
    )


# ---------------------------------------------------------------------------------------------
# DICOM series


def _read_sitk_series(paths: list[Path], what: str, syntax: str) -> sitk.Image:
    """Decodes the slices ``paths`` in this order (one file: a single 2D slice) with GDCM."""
    if len(paths) == 1:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(paths[0]))
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in paths])
    reader.SetImageIO("GDCMImageIO")
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot decode {what}: its pixel data ({syntax}) is damaged or in a compression no installed "
            f"decoder reads ({_short_cause(exc)})"
        ) from None


def _read_dicom(
    files: list[Path], label: str, *, series: str | None, max_voxels: int, allow_constant: bool
) -> Volume | None:
    """The chosen DICOM image series among ``files``: ``series`` (a SeriesInstanceUID), else the one
    with the most slices. None when no file is a DICOM image or SEG.

    The Volume keeps its source instances in slice order (``Volume.dicom``).
    """
    found = dicom.scan(files)
    if not found:
        return None
    images = sorted((s for s in found if s.kind != "seg"), key=lambda s: s.n_slices, reverse=True)
    if not images:
        holds = "is" if file_suffix(label) == ".dcm" else "holds only"  # a file, or a zip or folder
        raise InputError(f"{label} {holds} a DICOM Segmentation, a label and not an image: load it as the label")
    warnings: list[str] = []
    if series is not None:
        chosen = [s for s in images if s.uid == series.strip()]
        if not chosen:
            listed = "; ".join(s.describe() for s in images)
            raise InputError(f"{label} has no image series {series}; it holds {listed}")
        pick = chosen[0]
    else:
        pick = images[0]
        if len(images) > 1:
            others = "; ".join(s.describe() for s in images[1:])
            warnings.append(f"found {len(images)} DICOM series; took the largest, {pick.describe()}; others: {others}")
    if len(found) > len(images):
        warnings.append(f"left out {len(found) - len(images)} DICOM SEG file(s): a SEG is loaded as the label")
    what = f"the DICOM series in {label}" if len(files) > 1 else label
    _check_size(pick.size_xyz, max_voxels, label)
    if pick.kind == "multiframe":
        arr, geometry, source = dicom.multiframe_image(pick, what)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(geometry["spacing"])
        img.SetOrigin(geometry["origin"])
        img.SetDirection(geometry["direction"])
        desc = f"{label} (DICOM multi-frame, {pick.n_slices} slices)"
    else:
        paths, source = dicom.slice_order(pick, what)
        img = _read_sitk_series(paths, what, pick.transfer_syntax)
        desc = f"{label} (DICOM series, {len(paths)} slices)" if len(paths) > 1 else f"{label} (DICOM)"
    vol = volume_from_sitk(
        img, source=desc, warnings=warnings, modality_tag=pick.modality, allow_constant=allow_constant
    )
    vol.dicom = source
    return vol


def _extract_zip(path: Path, dest: Path, max_bytes: int) -> list[Path]:
    """Extracts the files of a zip flat into ``dest``; returns their paths.

    Only member basenames are used (prefixed with their position so that equal names in different
    folders do not collide), so no member can write outside ``dest``. The uncompressed size is
    checked from the directory first and again while copying, since the directory can lie.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path.name} is not a readable zip file ({exc})") from None
    out: list[Path] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise InputError(
                f"{path.name} unpacks to {total / 1024**3:.1f} GiB, the limit is {max_bytes / 1024**3:.1f} GiB"
            )
        written = 0
        for i, m in enumerate(members):
            base = os.path.basename(m.filename.replace("\\", "/"))
            if not base or base.startswith(".") or "__MACOSX" in m.filename:
                continue
            target = dest / f"{i:06d}_{base}"
            try:
                with zf.open(m) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise InputError(f"{path.name} unpacks to more than {max_bytes / 1024**3:.1f} GiB")
                        dst.write(chunk)
            except InputError:
                raise
            except Exception as exc:  # BadZipFile, zlib.error, OSError, RuntimeError (encrypted member)
                raise InputError(f"cannot unpack {m.filename!r} from {path.name}: {first_line(exc)}") from None
            out.append(target)
    return out


@contextlib.contextmanager
def _dicom_candidates(path: Path, max_bytes_zip: int) -> Iterator[list[Path]]:
    """The files that may hold DICOM: every file under a folder, a zip's members (unpacked into a
    temporary folder that lives as long as the context), or the file itself."""
    if path.is_dir():
        yield [Path(d) / f for d, _dirs, names in os.walk(path) for f in names]
    elif file_suffix(path.name) == ".zip":
        with tempfile.TemporaryDirectory(prefix="seqpatch_zip_") as tmp:
            yield _extract_zip(path, Path(tmp), max_bytes_zip)
    else:
        yield [path]


def _read_dicom_input(
    path: Path, *, series: str | None, max_voxels: int, max_bytes_zip: int, allow_constant: bool
) -> Volume:
    """A folder, .zip or .dcm: its DICOM image series; a zip of one other image file is read as that file."""
    ext = file_suffix(path.name)
    with _dicom_candidates(path, max_bytes_zip) as files:
        vol = _read_dicom(files, path.name, series=series, max_voxels=max_voxels, allow_constant=allow_constant)
        if vol is not None:
            return vol
        if ext == ".zip":  # not DICOM: accept a zip that wraps exactly one image file of another format
            images = [f for f in files if file_suffix(f.name) not in ("", ".zip", ".dcm")]
            if len(images) == 1:
                vol = _read_path(
                    images[0], series=None, max_voxels=max_voxels, max_bytes_zip=max_bytes_zip,
                    allow_constant=allow_constant,
                )
                vol.source = f"{path.name} → {images[0].name.split('_', 1)[1]}"
                return vol
    if path.is_dir():
        raise InputError(f"no DICOM series found in the folder {path.name}")
    if ext == ".zip":
        raise InputError(f"{path.name} holds no DICOM series (and not exactly one image file)")
    raise InputError(f"cannot read {path.name} as DICOM: not a DICOM image file")


# ---------------------------------------------------------------------------------------------
# public API


def _read_path(
    path: Path, *, series: str | None, max_voxels: int, max_bytes_zip: int, allow_constant: bool
) -> Volume:
    if not path.exists():
        raise InputError(f"file not found: {path.name or path}")
    ext = file_suffix(path.name)
    if not path.is_dir():
        if not ext:
            raise InputError(f"unknown file type {path.name!r}; supported: {SUPPORTED}")
        if path.stat().st_size == 0:
            raise InputError(f"{path.name} is an empty file")
    if path.is_dir() or ext in (".zip", ".dcm"):
        return _read_dicom_input(
            path, series=series, max_voxels=max_voxels, max_bytes_zip=max_bytes_zip, allow_constant=allow_constant
        )
    if series is not None:
        raise InputError(f"a series was chosen ({series}), but {path.name} is not DICOM")
    picture = ext in PICTURE_FORMATS
    fmt = PICTURE_FORMATS[ext] if picture else VOLUME_FORMATS[ext]
    return _read_file(path, fmt, max_voxels=max_voxels, picture=picture, allow_constant=allow_constant)


def read_volume(
    path: str | Path,
    *,
    series: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    max_bytes_zip: int = DEFAULT_MAX_BYTES_ZIP,
) -> Volume:
    """Reads an image file, DICOM folder or DICOM .zip into a :class:`Volume` ((z, y, x) float32).

    Formats: NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd + data file), NRRD (.nrrd, .nhdr), DICOM
    (a folder or a .zip of one or more series: ``series``, a SeriesInstanceUID, or else the series
    with the most slices; a single .dcm is one slice, or an enhanced multi-frame CT/MR volume), and
    2D pictures PNG/JPEG/TIFF/BMP (one slice, shape (1, y, x)).

    DICOM slices are stacked along their normal; a series with mixed slice sizes or orientations,
    several slices at one position, a gap, uneven spacing or gantry tilt is refused, and so is a
    DICOM SEG (a label). The Volume keeps the source instances in slice order (``Volume.dicom``).

    The header is read first and images over ``max_voxels`` (counting every dimension) are refused
    before their voxels are allocated. 4D+ images: the first 3D volume is kept; multi-component
    images: the first component, or the luminance of RGB/RGBA uint8; NaN/Inf voxels become the
    minimum finite value. Each such change adds a line to ``Volume.warnings``. Images smaller than
    ``MIN_INPLANE``×``MIN_INPLANE`` in-plane and constant images are refused.

    Modality: the DICOM tag 0008|0060 when present ("CT", "MR"; any other value → "unknown");
    otherwise guessed: "CT" if the minimum is ≤ -500 (air in HU), else "MR" for a medical image file
    (not a picture format, one slice or more) with no negative values, else "unknown". Pictures carry
    no pixel size: they get 1.0 mm pixels, and a warning says so.

    Raises:
        InputError: with one line, for anything that cannot be read or used.
    """
    return _read_path(
        Path(path), series=series, max_voxels=max_voxels, max_bytes_zip=max_bytes_zip, allow_constant=False
    )


def write_mask(mask: np.ndarray, like: Volume, path: str | Path) -> None:
    """Writes a (z, y, x) mask of ``like``'s shape as uint8 0/1 with ``like``'s exact geometry.

    The format follows the extension: .nii.gz, .nii, .nrrd, .mha or .mhd (+ .zraw), compressed.
    Any nonzero value is written as 1.
    """
    path = Path(path)
    m = np.asarray(mask)
    if m.shape != like.shape:
        raise InputError(f"mask shape {m.shape} differs from the image's {like.shape} (z, y, x)")
    if not path.name.lower().endswith(VOLUME_SUFFIXES):
        raise InputError(f"cannot write a mask as {path.name!r}; use one of {', '.join(VOLUME_SUFFIXES)}")
    img = like.to_sitk((m != 0).astype(np.uint8))
    try:
        sitk.WriteImage(img, str(path), useCompression=True)
    except RuntimeError as exc:
        raise InputError(f"cannot write {path.name}: {_short_cause(exc, path)}") from None


def _close(a: Sequence[float], b: Sequence[float], rel: float) -> bool:
    return all(abs(x - y) <= rel * max(1.0, abs(x), abs(y)) for x, y in zip(a, b, strict=True))


def read_label(path: str | Path, like: Volume) -> np.ndarray:
    """Reads a label image for ``like`` as uint8 (z, y, x), 1 where the label is nonzero.

    Same safety as :func:`read_volume` but an all-zero (constant) label is valid. Refused when the
    size differs from the image's, or spacing/origin/direction differ beyond 1e-3 relative
    (relative to max(1, |value|), so a difference of up to 0.001 mm near 0 is tolerated).

    A DICOM SEG (a .dcm, or a folder or zip holding one) is placed on the image through the source
    instances it references, which must be ``like``'s (see
    :func:`~seqpatch_core.images.dicom_seg.read_seg_label`); 1 where any segment holds the voxel.
    """
    path = Path(path)
    if path.is_dir() or (path.is_file() and path.stat().st_size and file_suffix(path.name) in (".zip", ".dcm")):
        with _dicom_candidates(path, DEFAULT_MAX_BYTES_ZIP) as files:
            segs = [s for s in dicom.scan(files) if s.kind == "seg"]
            if len(segs) > 1:
                raise InputError(f"{path.name} holds {len(segs)} DICOM SEG files; give the one to compare against")
            if segs:
                from seqpatch_core.images.dicom_seg import read_seg_label

                return read_seg_label(segs[0].files[0], like, path.name)
    z, y, x = like.shape
    lab = _read_path(
        path, series=None, max_voxels=DEFAULT_MAX_VOXELS, max_bytes_zip=DEFAULT_MAX_BYTES_ZIP, allow_constant=True
    )
    if lab.shape != like.shape:
        lz, ly, lx = lab.shape
        raise InputError(f"label geometry differs from the image: size {lx}×{ly}×{lz} vs {x}×{y}×{z}")
    for name, a, b in (
        ("spacing", lab.spacing, like.spacing),
        ("origin", lab.origin, like.origin),
        ("direction", lab.direction, like.direction),
    ):
        if not _close(a, b, 1e-3):
            fa = ", ".join(f"{v:.4g}" for v in a)
            fb = ", ".join(f"{v:.4g}" for v in b)
            raise InputError(f"label geometry differs from the image: {name} ({fa}) vs ({fb})")
    return (lab.array != 0).astype(np.uint8)
