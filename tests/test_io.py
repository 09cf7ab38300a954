"""Tests of seqpatch_core.images.io: formats, geometry round trips and clean one-line refusals."""

from __future__ import annotations

import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import write_dicom_series

from seqpatch_core.base.errors import InputError
from seqpatch_core.images.io import read_label, read_volume, write_mask
from seqpatch_core.images.volume import Volume, volume_from_array

SPACING_XYZ = (0.7, 0.9, 2.5)
ORIGIN = (-120.5, 33.25, 7.0)


def _rotation() -> tuple[float, ...]:
    """A proper rotation (30° about z, then 10° about x), row-major like SimpleITK."""
    a, b = np.deg2rad(30.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple(float(v) for v in (rz @ rx).ravel())


DIRECTION = _rotation()


def _ct_array(shape=(5, 12, 10), seed=0) -> np.ndarray:
    """(z, y, x) float32 with air (-1000) and tissue, distinct along every axis."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1500, size=shape).astype(np.float32)
    return a


def _write(
    arr: np.ndarray, path: Path, spacing=SPACING_XYZ, origin=ORIGIN, direction=DIRECTION, **kw
) -> None:
    img = sitk.GetImageFromArray(arr, **kw)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"])
def test_round_trip_geometry(tmp_path: Path, ext: str) -> None:
    arr = _ct_array()
    src = tmp_path / f"img{ext}"
    _write(arr, src)
    vol = read_volume(src)
    assert vol.array.dtype == np.float32 and vol.array.flags.c_contiguous
    assert vol.shape == (5, 12, 10)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, SPACING_XYZ[::-1], rtol=1e-6)
    np.testing.assert_allclose(vol.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(vol.direction, DIRECTION, atol=1e-5)
    assert vol.modality == "CT"
    assert "\n" not in vol.summary() and "10×12×5" in vol.summary()

    # index_to_physical agrees with SimpleITK on the written file ((x, y, z) index there).
    ref = sitk.ReadImage(str(src))
    np.testing.assert_allclose(
        vol.index_to_physical((2.0, 3.5, 4.0)), ref.TransformContinuousIndexToPhysicalPoint((4.0, 3.5, 2.0)),
        atol=1e-9,
    )

    mask = (arr > 0).astype(np.float32) * 7  # any nonzero → 1
    for out_ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        out = tmp_path / f"mask{out_ext}"
        write_mask(mask, vol, out)
        back = sitk.ReadImage(str(out))
        assert back.GetPixelID() == sitk.sitkUInt8
        assert back.GetSize() == ref.GetSize()
        # NIfTI stores geometry in float32, so allow its rounding; the others must be exact.
        tol = 1e-5 if "nii" in out_ext else 1e-12
        np.testing.assert_allclose(back.GetSpacing(), vol.spacing[::-1], atol=tol)
        np.testing.assert_allclose(back.GetOrigin(), vol.origin, atol=tol * 100)
        np.testing.assert_allclose(back.GetDirection(), vol.direction, atol=tol)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), (arr > 0).astype(np.uint8))
        # The mask reads back as a label of the volume.
        np.testing.assert_array_equal(read_label(out, vol), (arr > 0).astype(np.uint8))


def test_to_sitk_and_mask_shape_checks(tmp_path: Path) -> None:
    vol = volume_from_array(_ct_array(), spacing=(2.5, 0.9, 0.7), origin=ORIGIN, direction=DIRECTION)
    img = vol.to_sitk()
    assert img.GetSize() == (10, 12, 5) and img.GetSpacing() == SPACING_XYZ
    with pytest.raises(InputError) as e:
        write_mask(np.zeros((5, 10, 12), np.uint8), vol, tmp_path / "m.nii.gz")
    _one_line(e)
    with pytest.raises(InputError) as e:
        write_mask(np.zeros(vol.shape, np.uint8), vol, tmp_path / "m.png")
    _one_line(e)


# ------------------------------------------------------------------ DICOM


def test_dicom_folder_and_zip(tmp_path: Path) -> None:
    arr = _ct_array((4, 16, 16))
    write_dicom_series(tmp_path / "ser", arr, "1.2.826.0.1.3680043.2.1125.1")
    vol = read_volume(tmp_path / "ser")
    assert vol.shape == (4, 16, 16) and vol.modality == "CT"
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, (3.0, 0.8, 0.8), atol=1e-6)
    assert "DICOM series" in vol.source and not vol.warnings

    z = tmp_path / "ser.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted((tmp_path / "ser").iterdir()):
            zf.write(f, f"../../evil/{f.name}")  # traversal in member names is ignored
    vz = read_volume(z)
    np.testing.assert_array_equal(vz.array, arr)
    assert not (tmp_path.parent / "evil").exists()

    single = read_volume(tmp_path / "ser" / "IM0000.dcm")
    assert single.shape == (1, 16, 16) and single.modality == "CT"


def test_dicom_zip_two_series_takes_largest(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "a", _ct_array((3, 16, 16), 1), "1.2.826.0.1.3680043.2.1125.2", "MR")
    big = np.abs(_ct_array((5, 16, 16), 2))
    write_dicom_series(tmp_path / "b", big, "1.2.826.0.1.3680043.2.1125.3", "MR")
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for sub in ("a", "b"):  # same file names in both folders
            for f in sorted((tmp_path / sub).iterdir()):
                zf.write(f, f"{sub}/{f.name}")
    vol = read_volume(z)
    assert vol.shape == (5, 16, 16) and vol.modality == "MR"
    np.testing.assert_array_equal(vol.array, big)
    assert any("2 DICOM series" in w and "largest" in w for w in vol.warnings)


def test_zip_without_dicom(tmp_path: Path) -> None:
    z = tmp_path / "notes.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "no images here\n")
        zf.writestr("more.txt", "still none\n")
    with pytest.raises(InputError) as e:
        read_volume(z)
    assert "DICOM" in _one_line(e)


def test_zip_too_large_uncompressed(tmp_path: Path) -> None:
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * 200_000)
    with pytest.raises(InputError) as e:
        read_volume(z, max_bytes_zip=100_000)
    _one_line(e)


# ------------------------------------------------------------------ 2D pictures


def test_png_rgb_to_grey(tmp_path: Path) -> None:
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[5:, :, 1] = 100
    _write(rgb, tmp_path / "c.png", spacing=(1, 1), origin=(0, 0), direction=(1, 0, 0, 1), isVector=True)
    vol = read_volume(tmp_path / "c.png")
    assert vol.shape == (1, 20, 24) and vol.modality == "unknown"
    np.testing.assert_allclose(vol.array[0, 0, 0], 0.299 * 200, rtol=1e-5)
    np.testing.assert_allclose(vol.array[0, 10, 0], 0.299 * 200 + 0.587 * 100, rtol=1e-5)
    assert any("grey" in w for w in vol.warnings)


@pytest.mark.parametrize("ext,dtype", [(".png", np.uint8), (".tif", np.uint16), (".bmp", np.uint8)])
def test_grey_pictures(tmp_path: Path, ext: str, dtype) -> None:
    a = (np.arange(16 * 12).reshape(16, 12) % 200).astype(dtype)
    _write(a, tmp_path / f"g{ext}", spacing=(1, 1), origin=(0, 0), direction=(1, 0, 0, 1))
    vol = read_volume(tmp_path / f"g{ext}")
    assert vol.shape == (1, 16, 12)
    assert [w for w in vol.warnings if "no pixel size" not in w] == []  # only the 1.0 mm note
    assert any("1.0 mm pixels assumed" in w for w in vol.warnings) == (vol.spacing[1:] == (1.0, 1.0))
    np.testing.assert_array_equal(vol.array[0], a)
    assert len(vol.direction) == 9 and len(vol.origin) == 3


def test_tiny_picture_refused(tmp_path: Path) -> None:
    for n in (1, 4):
        a = np.arange(n * n, dtype=np.uint8).reshape(n, n)
        _write(a, tmp_path / f"t{n}.png", spacing=(1, 1), origin=(0, 0), direction=(1, 0, 0, 1))
        with pytest.raises(InputError) as e:
            read_volume(tmp_path / f"t{n}.png")
        assert "too small" in _one_line(e)


# ------------------------------------------------------------------ dimensions and components


def test_4d_takes_first_volume(tmp_path: Path) -> None:
    arr = _ct_array((4, 10, 9))
    vols = []
    for i in range(3):
        v = sitk.GetImageFromArray(arr + i)
        v.SetSpacing(SPACING_XYZ)
        vols.append(v)
    sitk.WriteImage(sitk.JoinSeries(vols), str(tmp_path / "4d.nii.gz"))
    vol = read_volume(tmp_path / "4d.nii.gz")
    assert vol.shape == (4, 10, 9)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, SPACING_XYZ[::-1], rtol=1e-6)
    assert any("first of 3 volumes" in w for w in vol.warnings)


def test_vector_image_first_component(tmp_path: Path) -> None:
    a = np.random.default_rng(3).random((3, 9, 10, 2)).astype(np.float32)
    _write(a, tmp_path / "v.mha", isVector=True)
    vol = read_volume(tmp_path / "v.mha")
    np.testing.assert_array_equal(vol.array, a[..., 0])
    assert any("first of 2 components" in w for w in vol.warnings)


# ------------------------------------------------------------------ bad files


def test_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "nope.nii.gz")
    assert "not found" in _one_line(e)
    (tmp_path / "x.docx").write_text("hello")
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "x.docx")
    assert "unknown file type" in _one_line(e)
    with pytest.raises(InputError) as e:
        read_volume(tmp_path)  # a folder without DICOM
    _one_line(e)


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nrrd", "x.mha", "x.png", "x.dcm"])
def test_text_file_with_image_name(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("this is not an image\nsecond line\n")
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / name)
    assert name in _one_line(e)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_truncated_file(tmp_path: Path, ext: str) -> None:
    a = (np.random.default_rng(4).normal(size=(10, 20, 20)) * 300).astype(np.int16)
    f = tmp_path / f"t{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(f), useCompression=True)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as e:
        read_volume(f)
    line = _one_line(e)
    assert not line.rstrip().endswith(":"), line  # a reason, not a dangling "Error reading t.nrrd:"


def test_constant_refused(tmp_path: Path) -> None:
    _write(np.full((3, 10, 10), 5.0, np.float32), tmp_path / "c.nii.gz")
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "c.nii.gz")
    assert "constant (all voxels = 5)" in _one_line(e)
    with pytest.raises(InputError):
        volume_from_array(np.zeros((10, 10)))


def test_nan_inf_replaced(tmp_path: Path) -> None:
    a = _ct_array((3, 10, 10))
    a[0, 0, :3] = np.nan
    a[1, 1, 1] = np.inf
    a[2, 2, 2] = -np.inf
    lo = float(np.nanmin(a[np.isfinite(a)]))
    _write(a, tmp_path / "n.mha")
    for vol in (read_volume(tmp_path / "n.mha"), volume_from_array(a)):
        assert np.isfinite(vol.array).all()
        assert vol.array[0, 0, 0] == lo and vol.array[1, 1, 1] == lo
        assert any("replaced 5 NaN/Inf" in w for w in vol.warnings)


def test_voxel_cap_before_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.random.default_rng(5).random((64, 64, 64)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / "s.nii"))
    # Neither the voxels nor anything else may be read once the header says "too big".
    calls: list[str] = []
    real_execute = sitk.ImageFileReader.Execute
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: calls.append("x") or real_execute(self))
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "s.nii", max_voxels=1000)
    assert "too large" in _one_line(e)

    # A header claiming 32767³ voxels (NIfTI-1 dims are int16, so this is the largest it can say).
    data = bytearray((tmp_path / "s.nii").read_bytes())
    assert struct.unpack("<i", data[:4])[0] == 348
    data[42:48] = struct.pack("<3h", 32767, 32767, 32767)
    (tmp_path / "big.nii").write_bytes(bytes(data))
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "big.nii")
    assert "too large" in _one_line(e)
    assert time.perf_counter() - t0 < 2.0
    assert not calls


# ------------------------------------------------------------------ labels and modality


def test_label_geometry_mismatch(tmp_path: Path) -> None:
    vol = volume_from_array(_ct_array((3, 10, 10)), spacing=(2.5, 0.9, 0.7))
    _write(np.zeros((3, 12, 12), np.uint8), tmp_path / "l.nii.gz", spacing=(0.7, 0.9, 2.5),
           origin=(0, 0, 0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InputError) as e:
        read_label(tmp_path / "l.nii.gz", vol)
    assert _one_line(e) == "label geometry differs from the image: size 12×12×3 vs 10×10×3"

    _write(np.zeros((3, 10, 10), np.uint8), tmp_path / "s.nii.gz", spacing=(0.7, 0.9, 3.0),
           origin=(0, 0, 0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InputError) as e:
        read_label(tmp_path / "s.nii.gz", vol)
    assert "spacing" in _one_line(e)

    # An all-zero label of the right geometry is valid.
    _write(np.zeros((3, 10, 10), np.uint8), tmp_path / "z.nii.gz", spacing=(0.7, 0.9, 2.5),
           origin=(0, 0, 0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    lab = read_label(tmp_path / "z.nii.gz", vol)
    assert lab.dtype == np.uint8 and lab.shape == (3, 10, 10) and not lab.any()


def test_modality_guess(tmp_path: Path) -> None:
    _write(_ct_array(), tmp_path / "ct.nii.gz")
    assert read_volume(tmp_path / "ct.nii.gz").modality == "CT"
    mr = np.random.default_rng(6).random((6, 10, 10)).astype(np.float32) * 800
    _write(mr, tmp_path / "mr.nrrd")
    assert read_volume(tmp_path / "mr.nrrd").modality == "MR"
    _write(mr[:1] - 100, tmp_path / "one.mha")  # one slice with negatives: no guess
    assert read_volume(tmp_path / "one.mha").modality == "unknown"
    _write(mr[:1], tmp_path / "one_mr.nii.gz")  # one non-negative slice of a medical format: MR
    assert read_volume(tmp_path / "one_mr.nii.gz").modality == "MR"


def test_volume_from_array_checks() -> None:
    v = volume_from_array(np.arange(100, dtype=np.int16).reshape(10, 10))
    assert isinstance(v, Volume) and v.shape == (1, 10, 10) and v.array.dtype == np.float32
    for bad in (np.zeros((0, 10, 10)), np.ones((2, 2, 2, 2)), np.array([["a"] * 10] * 10)):
        with pytest.raises(InputError) as e:
            volume_from_array(bad)
        _one_line(e)
    with pytest.raises(InputError):
        volume_from_array(np.arange(100.0).reshape(10, 10), spacing=(1, 0, 1))
    with pytest.raises(InputError):
        volume_from_array(np.arange(100.0).reshape(10, 10), modality="PET")
