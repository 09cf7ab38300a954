"""Display orientation (seqpatch_core.images.orientation): one volume stored as LPS, LAS, RAS and with
permuted axes is shown as the same picture, and every display pixel maps back to the same physical
point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seqpatch_core.images.orientation import PLANE_NAMES, orientation
from seqpatch_core.images.volume import volume_from_sitk

# Stored orders of one physical volume: DICOM letters of the image's x, y, z axes. The last three have
# permuted axes: in-plane x and y exchanged (still axial slices), coronal slices, sagittal slices.
CODES = ("LPS", "LAS", "RAS", "RAI", "PLS", "LSP", "PSL")
SCROLLED = {
    "LPS": "axial",
    "LAS": "axial",
    "RAS": "axial",
    "RAI": "axial",
    "PLS": "axial",
    "LSP": "coronal",
    "PSL": "sagittal",
}
# Screen edges (top, bottom, left, right) in the radiological convention.
LETTERS = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}
# The physical point the planes go through, as an index of the LPS volume (x, y, z).
POINT_XYZ = (7, 11, 5)


def _reference() -> sitk.Image:
    """An LPS volume with no symmetry: every voxel a distinct value, three sizes, three spacings,
    an origin away from zero."""
    shape_zyx = (9, 17, 13)
    arr = np.arange(math.prod(shape_zyx), dtype=np.float32).reshape(shape_zyx)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 3.0))
    img.SetOrigin((-12.5, 30.0, 101.0))
    return img


def _stored(code: str) -> sitk.Image:
    """The reference volume stored in ``code``'s axis order: the same voxels at the same physical
    points (DICOMOrient only exchanges and reverses axes)."""
    img = sitk.DICOMOrient(_reference(), code)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection()) == code
    return img


def _through_point(img: sitk.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The (z, y, x) array and the (z, y, x) voxel of the reference's POINT_XYZ."""
    phys = _reference().TransformIndexToPhysicalPoint(POINT_XYZ)
    x, y, z = img.TransformPhysicalPointToIndex(phys)
    return sitk.GetArrayFromImage(img), (z, y, x)


@pytest.mark.parametrize("code", CODES)
def test_orientation_names_the_scrolled_plane_and_letters(code):
    o = orientation(_stored(code).GetDirection())
    assert o.code == code
    assert o.slices.name == SCROLLED[code]
    assert sorted(p.name for p in o.planes) == sorted(PLANE_NAMES)
    for p in o.planes:
        assert p.letters == LETTERS[p.name]
        assert p.normal not in p.axes and sorted((p.normal, *p.axes)) == [0, 1, 2]


@pytest.mark.parametrize("code", CODES)
def test_every_storage_shows_the_same_pictures(code):
    """Pixel-identical display of each plane through the same physical point, same pixel size."""
    ref_arr, ref_idx = _through_point(_reference())
    ref = orientation(_reference().GetDirection())
    img = _stored(code)
    arr, idx = _through_point(img)
    o = orientation(img.GetDirection())
    spacing_zyx = tuple(reversed(img.GetSpacing()))
    for name in PLANE_NAMES:
        p, q = o.plane(name), ref.plane(name)
        shown = p.to_display(p.take(arr, idx[p.normal]))
        expected = q.to_display(q.take(ref_arr, ref_idx[q.normal]))
        np.testing.assert_array_equal(shown, expected)
        assert p.display_shape(arr.shape) == shown.shape
        assert p.display_spacing(spacing_zyx) == pytest.approx(q.display_spacing((3.0, 0.9, 0.7)))
        # every shown pixel is the voxel its point maps back to (pictures and points agree)
        plane = p.take(arr, idx[p.normal])
        rc = np.stack(np.meshgrid(*map(np.arange, shown.shape), indexing="ij"), axis=-1)
        ab = np.rint(p.points_to_plane(rc, plane.shape)).astype(int)
        np.testing.assert_array_equal(plane[ab[..., 0], ab[..., 1]], shown)
        # trailing axes (RGB) are carried along
        rgb = np.stack([plane, plane + 1, plane + 2], axis=-1)
        np.testing.assert_array_equal(p.to_display(rgb)[..., 1], shown + 1)


@pytest.mark.parametrize("code", CODES)
def test_display_pixels_map_to_the_same_physical_points(code):
    img = _stored(code)
    vol = volume_from_sitk(img, source=code, warnings=[])
    arr, idx = _through_point(img)
    o = orientation(vol.direction)
    ref_img = _reference()
    ref_vol = volume_from_sitk(ref_img, source="LPS", warnings=[])
    ref_arr, ref_idx = _through_point(ref_img)
    ref = orientation(ref_vol.direction)
    rng = np.random.default_rng(0)
    for name in PLANE_NAMES:
        p, q = o.plane(name), ref.plane(name)
        rows, cols = p.display_shape(arr.shape)
        # pixel centres, pixel corners and points in between
        shown = np.stack([rng.uniform(-0.5, rows - 0.5, 20), rng.uniform(-0.5, cols - 0.5, 20)], axis=-1)
        for disp, shape in ((p, arr.shape), (q, ref_arr.shape)):  # points_to_plane undoes points_to_display
            plane = disp.points_to_plane(shown, disp.plane_shape(shape))
            np.testing.assert_allclose(disp.points_to_display(plane, disp.plane_shape(shape)), shown)
        got = [vol.index_to_physical(_voxel(p, idx, pt, arr.shape)) for pt in shown]
        want = [ref_vol.index_to_physical(_voxel(q, ref_idx, pt, ref_arr.shape)) for pt in shown]
        np.testing.assert_allclose(got, want, atol=1e-9)


def _voxel(p, idx, display_pt, shape) -> tuple[float, float, float]:
    """(z, y, x) voxel of a display point on plane ``p`` through voxel ``idx``."""
    a, b = p.plane_axes()
    out = [float(v) for v in idx]
    out[a], out[b] = p.points_to_plane(display_pt, p.plane_shape(shape))
    return tuple(out)


@pytest.mark.parametrize("code", CODES)
def test_screen_directions_are_the_letters(code):
    """Going down a picture walks toward its bottom letter, going right toward its right letter,
    checked on the physical points of neighbouring pixels (independently of the tables above)."""
    img = _stored(code)
    vol = volume_from_sitk(img, source=code, warnings=[])
    arr, idx = _through_point(img)
    lps = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
    for p in orientation(vol.direction).planes:
        at = np.array(vol.index_to_physical(_voxel(p, idx, (1.0, 1.0), arr.shape)))
        down = np.array(vol.index_to_physical(_voxel(p, idx, (2.0, 1.0), arr.shape))) - at
        right = np.array(vol.index_to_physical(_voxel(p, idx, (1.0, 2.0), arr.shape))) - at
        for step, letter in ((down, p.letters[1]), (right, p.letters[3])):
            k, sign = lps[letter]
            assert sign * step[k] > 0 and np.count_nonzero(np.abs(step) > 1e-9) == 1, (p, letter, step)


def test_oblique_is_shown_by_its_nearest_axes():
    """A LAS volume tilted 20° about two axes is shown as LAS is: anterior (the face) up."""
    tilt = sitk.Euler3DTransform()
    tilt.SetRotation(math.radians(20), 0.0, math.radians(-20))
    las = np.array(sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation("LAS")).reshape(3, 3)
    rot = np.array(tilt.GetMatrix()).reshape(3, 3)
    o = orientation(tuple((rot @ las).ravel()))
    assert o.code == "LAS"
    assert o.slices.name == "axial" and o.slices.flips == (True, False)
    assert o.slices.axes == (1, 2)


def test_identity_is_shown_as_stored():
    """An LPS volume (and a picture, which gets the identity direction) is drawn row by row as stored."""
    o = orientation((1, 0, 0, 0, 1, 0, 0, 0, 1))
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(o.slices.to_display(a), a)
    assert o.slices.letters == ("A", "P", "R", "L")


def test_a_degenerate_direction_still_gets_three_planes():
    """Two index axes along the same physical axis (a broken header): every plane is still shown."""
    o = orientation((1, 0, 0, 1, 0, 0, 0, 0, 1))
    assert sorted(p.name for p in o.planes) == sorted(PLANE_NAMES)


# ----------------------------------------------------------------------------- the page (no browser)
# One CT phantom stored in every order of CODES, loaded as a user would: the page must show the same
# slice picture, a click on the same screen pixel must land on the same physical point, and the
# exports must keep the file's own voxel frame and geometry.

PHANTOM_ZYX = (11, 41, 37)  # odd sizes: the middle row, column and slice are the same physical ones
# The ball's centre as an LPS index (x, y, z): the patient's right front, below the middle slice
# (so that a slice index reversed is another slice).
BALL_XYZ = (11, 12, 4)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """{code: (image, label)} NIfTI files of one CT phantom: air, a body ellipse, a bright ball (the
    label) and a smaller bright mark at the left back."""
    d = tmp_path_factory.mktemp("orient")
    nz, ny, nx = PHANTOM_ZYX
    zz, yy, xx = np.mgrid[:nz, :ny, :nx].astype(np.float64)
    arr = np.full(PHANTOM_ZYX, -1000.0)
    arr[((yy - 20) / 19) ** 2 + ((xx - 18) / 17) ** 2 <= 1] = -100.0  # below the soft window's middle
    bx, by, bz = BALL_XYZ
    ball = ((xx - bx) * 0.9) ** 2 + ((yy - by) * 0.8) ** 2 + ((zz - bz) * 3.0) ** 2 <= 5.0**2
    arr[ball] = 200.0
    arr[(yy - 31) ** 2 + (xx - 27) ** 2 <= 3**2] = 180.0
    arr += np.random.default_rng(0).normal(0.0, 5.0, arr.shape)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((0.9, 0.8, 3.0))
    img.SetOrigin((-20.0, 35.5, -7.0))
    lab = sitk.GetImageFromArray(ball.astype(np.uint8))
    lab.CopyInformation(img)
    out = {}
    for code in CODES:
        paths = (str(d / f"head_{code}.nii.gz"), str(d / f"head_{code}_label.nii.gz"))
        sitk.WriteImage(sitk.DICOMOrient(img, code), paths[0])
        sitk.WriteImage(sitk.DICOMOrient(lab, code), paths[1])
        out[code] = paths
    return out


@pytest.fixture(scope="module")
def bright():
    """A Predictor whose networks call bright = object (helpers.BrightNet): fast and deterministic."""
    from helpers import BrightNet

    from seqpatch_core.inference.predictor import Predictor

    return Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")


def _ball_on_screen(name: str) -> tuple[float, float]:
    """(row, column) of the ball's centre on the main picture's slice grid, from the LPS index and the
    convention alone (LPS storage is axial as shown; coronal and sagittal put superior, high z, up)."""
    nz = PHANTOM_ZYX[0]
    bx, by, bz = BALL_XYZ
    return {"axial": (by, bx), "coronal": (nz - 1 - bz, bx), "sagittal": (nz - 1 - bz, by)}[name]


@pytest.mark.parametrize("code", CODES)
def test_the_page_shows_one_picture_and_clicks_land_on_one_point(bright, phantom_files, code):
    from app import handlers, render
    from app.exports import export, mask_volume
    from app.view import click_to_voxel, render_view

    ref = handlers.load(bright, None, *phantom_files["LPS"])["state"]
    out = handlers.load(bright, None, *phantom_files[code])
    s = out["state"]
    name = SCROLLED[code]
    assert out["slice"]["label"] == f"{name.capitalize()} slice (z)"
    view = render_view(s)
    disp = orientation(s.volume.direction).slices
    rows, cols = disp.display_shape(s.shape)
    assert view["overlay"].shape[:2] == (rows * s.factor, cols * s.factor)
    if name == "axial":  # the middle slice, the same in every file: the same picture, letters, caption
        middle = PHANTOM_ZYX[0] // 2
        shown = handlers.change_slice(s, middle)["overlay"]
        np.testing.assert_array_equal(shown, handlers.change_slice(ref, middle)["overlay"])
    # A click on the ball's pixel (Gradio's [x, y] picture index) on the ball's slice lands on the
    # ball: the pixel maps back to its voxel in this file's order.
    ball_mm = ref.volume.index_to_physical(BALL_XYZ[::-1])
    handlers.change_slice(s, sitk.ReadImage(phantom_files[code][0]).TransformPhysicalPointToIndex(ball_mm)[2])
    px = render.slice_to_display(np.array(_ball_on_screen(name), dtype=float), s.factor)
    y, x = click_to_voxel(s, (px[1], px[0]))
    np.testing.assert_allclose(s.volume.index_to_physical((s.z, y, x)), ball_mm, atol=1e-6)
    # exports: the file's own voxel frame and geometry, and the click where it was
    handlers.segment(s, s.z, y, x)
    files = export(s)["files"]
    src = sitk.ReadImage(phantom_files[code][0])
    mask = sitk.ReadImage(next(p for p in files if p.endswith("_seqpatch_mask.nii.gz")))
    assert mask.GetSize() == src.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), src.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(mask.GetSpacing(), src.GetSpacing(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), mask_volume(s, "seqpatch"))
    # brought to LPS storage by SimpleITK, the mask is the ball on the one plane clicked
    lps = sitk.GetArrayFromImage(sitk.DICOMOrient(mask, "LPS")).astype(bool)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(phantom_files["LPS"][1])).astype(bool)
    axis = ("axial", "coronal", "sagittal").index(name)  # the plane's normal among LPS's (z, y, x)
    at = BALL_XYZ[::-1][axis]
    assert not np.delete(lps, at, axis=axis).any()
    got, want = np.take(lps, at, axis=axis), np.take(truth, at, axis=axis)
    assert 2 * np.count_nonzero(got & want) / (np.count_nonzero(got) + np.count_nonzero(want)) > 0.8
    rec = json.loads(Path(next(p for p in files if p.endswith("_clicks.json"))).read_text())
    (click,) = rec["clicks"]
    assert click["voxel_zyx"] == pytest.approx([s.z, y, x])
    np.testing.assert_allclose(click["physical_xyz_mm"], ball_mm, atol=1e-3)
    s.close()
    ref.close()


def test_the_planes_through_the_click_are_one_picture_whatever_the_storage(bright, phantom_files):
    """The two planes across the slices (superior up, with their letters) of LPS, LAS, RAS and RAI
    files: the same pictures, the line of the current slice included."""
    from app import handlers
    from app.view import render_planes

    pictures = {}
    for code in ("LPS", "LAS", "RAS", "RAI"):
        s = handlers.load(bright, None, *phantom_files[code])["state"]
        pictures[code] = render_planes(s)
        s.close()
    for code in ("LAS", "RAS", "RAI"):
        for name in ("coronal", "sagittal"):
            np.testing.assert_array_equal(pictures[code][name], pictures["LPS"][name], err_msg=f"{code} {name}")


def test_the_3d_object_montage_is_shown_as_the_slice(bright, phantom_files, monkeypatch):
    """The slices of "Segment the whole object" are turned as the main slice is: an LAS file's montage
    is about the LPS file's (its crop box may differ by a pixel), far closer than the LAS slices
    drawn as stored."""
    from app import handlers, teaching_handlers

    ball_mm = sitk.ReadImage(phantom_files["LPS"][0]).TransformIndexToPhysicalPoint(BALL_XYZ)

    def montage(code: str) -> np.ndarray:
        s = handlers.load(bright, None, *phantom_files[code])["state"]
        x, y, z = sitk.ReadImage(phantom_files[code][0]).TransformPhysicalPointToIndex(ball_mm)
        handlers.segment(s, z, float(y), float(x))
        pic = teaching_handlers.segment_object(s, "seqpatch")["obj_view"].astype(np.float64)
        s.close()
        return pic

    lps, las = montage("LPS"), montage("LAS")
    monkeypatch.setattr(teaching_handlers, "orientation", lambda _: orientation((1, 0, 0, 0, 1, 0, 0, 0, 1)))
    as_stored = montage("LAS")
    assert lps.shape == las.shape == as_stored.shape
    near, far = np.abs(las - lps).mean(), np.abs(as_stored - lps).mean()
    assert near < far / 2, (near, far)
