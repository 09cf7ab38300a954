"""Tests for :mod:`seqpatch_core.base.metrics` against hand-computed values and brute-force references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import (
    average_boundary_distance,
    centroid_distance,
    dice,
    evaluate_masks,
    hausdorff95,
    relative_volume_difference,
)

EXPECTED_KEYS = {"dice", "cd_x", "cd_y", "cd_z", "hd95", "abd", "arvd", "size_pred", "size_ref"}


def _box(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    """Bool mask of ``shape`` with the half-open box ``[lo, hi)`` set."""
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def _brute_boundary_points(mask: np.ndarray) -> np.ndarray:
    """(N, ndim) integer indices of foreground pixels with a background face neighbour.

    Written independently of the library: shifts of a zero-padded copy, no erosion.
    """
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    all_neighbours_fg = np.ones_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            all_neighbours_fg &= np.roll(padded, step, axis=axis)[inner]
    return np.argwhere(mask & ~all_neighbours_fg)


def _brute_surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Pooled symmetric surface distances (mm) from all pairwise boundary-point distances."""
    a = _brute_boundary_points(pred) * np.asarray(spacing)
    b = _brute_boundary_points(ref) * np.asarray(spacing)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
    return np.concatenate([d.min(axis=1), d.min(axis=0)])


# ---------------------------------------------------------------------------------------- Dice


@pytest.mark.parametrize(
    ("ref_lo", "expected"),
    [
        ((5, 5), 1.0),  # identical
        ((5, 10), 0.5),  # shifted half a side: overlap 50 of 100 + 100 px -> 2*50/200
        ((5, 20), 0.0),  # disjoint
    ],
    ids=["identical", "half", "disjoint"],
)
def test_dice_squares(ref_lo: tuple[int, int], expected: float) -> None:
    shape = (30, 40)
    pred = _box(shape, (5, 5), (15, 15))
    ref = _box(shape, ref_lo, (ref_lo[0] + 10, ref_lo[1] + 10))
    assert dice(pred, ref) == pytest.approx(expected, abs=1e-12)
    assert dice(pred.astype(np.uint8), ref.astype(np.uint8)) == pytest.approx(expected, abs=1e-12)


def test_dice_matches_simpleitk_on_random_pair() -> None:
    rng = np.random.default_rng(1234)
    pred = rng.random((8, 24, 32)) < 0.4
    ref = rng.random((8, 24, 32)) < 0.5
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(sitk.GetImageFromArray(ref.astype(np.uint8)), sitk.GetImageFromArray(pred.astype(np.uint8)))
    assert dice(pred, ref) == pytest.approx(f.GetDiceCoefficient(), abs=1e-9)


# ---------------------------------------------------------------------------------- Centroid


def test_centroid_distance_shift_in_x_anisotropic() -> None:
    spacing = (2.0, 0.5)  # (y, x) mm
    pred = _box((20, 30), (4, 4), (12, 12))
    ref = _box((20, 30), (4, 7), (12, 15))  # 3 px along x
    cd = centroid_distance(pred, ref, spacing)
    assert set(cd) == {"x", "y", "z"}
    assert cd["x"] == pytest.approx(1.5, abs=1e-12)
    assert cd["y"] == pytest.approx(0.0, abs=1e-12)
    assert cd["z"] == 0.0


def test_centroid_matches_simpleitk_label_shape() -> None:
    """Physical centroids from SimpleITK (x, y, z order, reversed spacing) agree with ours."""
    spacing = (5.0, 0.8, 1.3)  # (z, y, x)
    pred = _box((6, 20, 20), (1, 2, 3), (4, 9, 11))
    ref = _box((6, 20, 20), (2, 5, 1), (6, 15, 8))
    centroids = []
    for m in (pred, ref):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing(spacing[::-1])
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(img)
        centroids.append(np.asarray(stats.GetCentroid(1)))
    dx, dy, dz = np.abs(centroids[0] - centroids[1])
    cd = centroid_distance(pred, ref, spacing)
    assert (cd["x"], cd["y"], cd["z"]) == pytest.approx((dx, dy, dz), abs=1e-9)


# ------------------------------------------------------------------------- Surface distances


def test_single_pixels_by_hand() -> None:
    # One pixel each, 3 px apart in x at 0.5 mm: every surface distance is 1.5 mm.
    pred = _box((5, 8), (2, 1), (3, 2))
    ref = _box((5, 8), (2, 4), (3, 5))
    assert hausdorff95(pred, ref, (2.0, 0.5)) == pytest.approx(1.5, abs=1e-12)
    assert average_boundary_distance(pred, ref, (2.0, 0.5)) == pytest.approx(1.5, abs=1e-12)


@pytest.mark.parametrize(
    ("spacing", "hd95_mm", "abd_mm"),
    [((1.0, 1.0), 2.0, 1.0), ((1.0, 0.5), 1.0, 19 / 36)],
    ids=["isotropic", "x-0.5mm"],
)
def test_square_shift_by_hand(spacing: tuple[float, float], hd95_mm: float, abd_mm: float) -> None:
    """10x10 square vs the same shifted 2 px along x; values counted by hand.

    Each boundary has 36 px (rows y=0, 9: 20 px; columns x=0, 9 for y=1..8: 16 px); the
    configuration is mirror-symmetric, so both directions give the same 36 distances. With
    spacing (y, x) = (1, 1), pred -> ref: top/bottom rows x=0 -> 2, x=1 -> 1, x=2..9 -> 0 (on
    ref's rows); left column -> 2 (to ref's left column); right column x=9 -> min(2, y, 9-y) =
    1, 2, 2, 2, 2, 2, 2, 1. So 16 twos, 4 ones, 16 zeros per direction: mean 36/36 = 1.0, and
    the 95th percentile of the 72 pooled values (32 twos on top) is 2.0. With (1, 0.5) the
    2-px x gaps become 1.0 mm and the right column is min(1.0, y, 9-y) = 1.0 throughout:
    per direction 18 x 1.0, 2 x 0.5, 16 x 0 -> mean 19/36, HD95 1.0.
    """
    pred = _box((14, 16), (2, 2), (12, 12))
    ref = _box((14, 16), (2, 4), (12, 14))
    assert hausdorff95(pred, ref, spacing) == pytest.approx(hd95_mm, abs=1e-6)
    assert average_boundary_distance(pred, ref, spacing) == pytest.approx(abd_mm, abs=1e-6)
    # The brute-force reference used below agrees with the hand count.
    expected = _brute_surface_distances(pred, ref, spacing)
    assert expected.size == 72
    assert np.percentile(expected, 95) == pytest.approx(hd95_mm)
    assert expected.mean() == pytest.approx(abd_mm)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (2.0, 0.5), (0.7, 3.1)])
@pytest.mark.parametrize("shift", [1, 2, 5])
def test_square_shift_matches_brute_force_2d(spacing: tuple[float, float], shift: int) -> None:
    pred = _box((20, 24), (3, 3), (13, 13))
    ref = _box((20, 24), (3, 3 + shift), (13, 13 + shift))
    expected = _brute_surface_distances(pred, ref, spacing)
    assert hausdorff95(pred, ref, spacing) == pytest.approx(np.percentile(expected, 95), abs=1e-6)
    assert average_boundary_distance(pred, ref, spacing) == pytest.approx(expected.mean(), abs=1e-6)


def test_object_touching_border_has_boundary_there() -> None:
    # The whole grid as both masks: every pixel on the image edge is boundary, distances 0.
    full = np.ones((6, 7), dtype=bool)
    assert hausdorff95(full, full, (1.0, 1.0)) == 0.0
    # Pred covers the grid, ref is one column narrower: the brute force pads with background too.
    ref = full.copy()
    ref[:, -1] = False
    expected = _brute_surface_distances(full, ref, (1.5, 0.5))
    assert hausdorff95(full, ref, (1.5, 0.5)) == pytest.approx(np.percentile(expected, 95), abs=1e-6)
    assert average_boundary_distance(full, ref, (1.5, 0.5)) == pytest.approx(expected.mean(), abs=1e-6)


def test_3d_z_spacing_5mm() -> None:
    spacing = (5.0, 0.8, 0.8)  # (z, y, x)
    shape = (8, 16, 16)
    pred = _box(shape, (1, 3, 3), (5, 11, 11))  # 4 slices of 8x8
    ref = _box(shape, (2, 3, 5), (6, 11, 13))  # one slice up, 2 px along x
    m = evaluate_masks(pred, ref, spacing)
    # Overlap: 3 slices x 8 x 6 = 144 voxels of 256 each -> 2*144/512.
    assert m["dice"] == pytest.approx(2 * 144 / 512, abs=1e-12)
    assert m["cd_z"] == pytest.approx(5.0, abs=1e-12)
    assert m["cd_y"] == pytest.approx(0.0, abs=1e-12)
    assert m["cd_x"] == pytest.approx(1.6, abs=1e-12)
    assert m["arvd"] == 0.0
    assert m["size_pred"] == pytest.approx(256 * 5.0 * 0.8 * 0.8)
    expected = _brute_surface_distances(pred, ref, spacing)
    assert m["hd95"] == pytest.approx(np.percentile(expected, 95), abs=1e-6)
    assert m["abd"] == pytest.approx(expected.mean(), abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    spacing=st.tuples(st.floats(0.2, 4.0), st.floats(0.2, 4.0)),
)
def test_random_masks_match_brute_force_and_are_symmetric(seed: int, spacing: tuple[float, float]) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.random((9, 11)) < 0.5
    ref = rng.random((9, 11)) < 0.5
    pred[4, 5] = ref[0, 0] = True  # never empty
    expected = _brute_surface_distances(pred, ref, spacing)
    hd = hausdorff95(pred, ref, spacing)
    assert hd == pytest.approx(np.percentile(expected, 95), abs=1e-6)
    assert average_boundary_distance(pred, ref, spacing) == pytest.approx(expected.mean(), abs=1e-6)
    assert hausdorff95(ref, pred, spacing) == pytest.approx(hd, abs=1e-9)
    assert dice(pred, ref) == pytest.approx(dice(ref, pred))


# ------------------------------------------------------------------------------------- aRVD


@pytest.mark.parametrize(("n_pred", "n_ref", "expected"), [(10, 10, 0.0), (5, 10, 0.5), (30, 10, 2.0)])
def test_relative_volume_difference(n_pred: int, n_ref: int, expected: float) -> None:
    pred = np.zeros(100, dtype=bool).reshape(10, 10)
    ref = pred.copy()
    pred.flat[:n_pred] = True
    ref.flat[:n_ref] = True
    assert relative_volume_difference(pred, ref) == pytest.approx(expected)


# ---------------------------------------------------------------------------------- Empty masks


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("pred_empty", "ref_empty"), [(True, True), (True, False), (False, True)])
def test_empty_masks(ndim: int, pred_empty: bool, ref_empty: bool) -> None:
    if ndim == 2:
        shape, spacing = (20, 30), (2.0, 0.5)
        obj = _box(shape, (3, 3), (8, 9))
    else:
        shape, spacing = (4, 20, 30), (5.0, 2.0, 0.5)
        obj = _box(shape, (1, 3, 3), (3, 8, 9))
    empty = np.zeros(shape, dtype=bool)
    pred = empty if pred_empty else obj
    ref = empty if ref_empty else obj
    m = evaluate_masks(pred, ref, spacing)

    assert set(m) == EXPECTED_KEYS
    assert all(type(v) is float and math.isfinite(v) for v in m.values())
    json.dumps(m)  # must serialise
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]  # array order
    if pred_empty and ref_empty:
        assert m["dice"] == 1.0
        assert m["hd95"] == m["abd"] == m["cd_x"] == m["cd_y"] == m["cd_z"] == 0.0
        assert m["arvd"] == 0.0
    else:
        diag = math.sqrt(sum(e * e for e in extent))
        assert m["dice"] == 0.0
        assert m["hd95"] == pytest.approx(diag)
        assert m["abd"] == pytest.approx(diag)
        assert m["cd_x"] == pytest.approx(extent[-1])
        assert m["cd_y"] == pytest.approx(extent[-2])
        assert m["cd_z"] == pytest.approx(extent[-3] if ndim == 3 else 0.0)
        assert m["arvd"] == 1.0
    assert m["size_pred"] == (0.0 if pred_empty else pytest.approx(obj.sum() * math.prod(spacing)))


def test_both_nonempty_results_are_plain_floats_and_serialise() -> None:
    pred = _box((10, 12), (1, 1), (6, 6))
    ref = _box((10, 12), (2, 3), (8, 9))
    m = evaluate_masks(pred.astype(np.uint8), ref.astype(np.uint8), (1.0, 1.0))
    assert set(m) == EXPECTED_KEYS
    assert all(type(v) is float and math.isfinite(v) for v in m.values())
    json.loads(json.dumps(m))


# ----------------------------------------------------------------------------------- Bad input


@pytest.mark.parametrize(
    ("pred_shape", "ref_shape", "spacing"),
    [
        ((10, 10), (10, 11), (1.0, 1.0)),  # shapes differ
        ((10, 10), (10, 10), (1.0, 1.0, 1.0)),  # spacing length != ndim
        ((3, 10, 10), (3, 10, 10), (1.0, 1.0)),  # spacing length != ndim
        ((10, 10), (10, 10), (0.0, 1.0)),  # non-positive spacing
        ((10,), (10,), (1.0,)),  # 1D
    ],
)
def test_bad_input_raises_input_error(
    pred_shape: tuple[int, ...], ref_shape: tuple[int, ...], spacing: tuple[float, ...]
) -> None:
    with pytest.raises(InputError) as info:
        evaluate_masks(np.zeros(pred_shape, bool), np.zeros(ref_shape, bool), spacing)
    assert "\n" not in str(info.value)


def test_dice_shape_mismatch_raises() -> None:
    with pytest.raises(InputError):
        dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
