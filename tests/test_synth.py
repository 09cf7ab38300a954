"""Tests for the synthetic training-slice generator (seqpatch_core.data.synth). Fast: tiny volumes only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from seqpatch_core.data.backgrounds import BackgroundBank
from seqpatch_core.data.recipe import ALL_SIZES, LESIONS, recipe
from seqpatch_core.data.synth import (
    SynthSlice,
    benchmark_set,
    inner_click,
    jitter_click,
    make_slice,
    move_click,
    training_rng,
)

SEEDS = [0, 1, 2, 3, 4, 5]


def _check_slice(s: SynthSlice, size: int) -> None:
    assert s.image.shape == (size, size) and s.image.dtype == np.float32
    assert s.label.shape == (size, size) and s.label.dtype == np.uint8
    assert float(s.image.min()) >= 0.0 and float(s.image.max()) <= 1.0
    assert set(np.unique(s.label)) <= {0, 1}
    assert s.label.any()
    _, n = ndi.label(s.label, structure=np.ones((3, 3), bool))
    assert n == 1
    assert np.array_equal(ndi.binary_fill_holes(s.label), s.label.astype(bool))
    y, x = s.click
    assert s.label[int(round(y)), int(round(x))] == 1
    assert isinstance(s.kind, str) and s.kind


@pytest.mark.parametrize("seed", SEEDS)
def test_make_slice_valid_and_deterministic(seed: int) -> None:
    a = make_slice(np.random.default_rng(seed), size=128)
    b = make_slice(np.random.default_rng(seed), size=128)
    _check_slice(a, 128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.click == b.click and a.kind == b.kind


@pytest.mark.parametrize("spacing", [0.6, 1.0, 2.0])
def test_object_size_and_position(spacing: float) -> None:
    rng = np.random.default_rng(11)
    for _ in range(8):
        s = make_slice(rng, size=160, spacing_mm=spacing)
        _check_slice(s, 160)
        assert s.spacing_mm == spacing
        diam_mm = 2.0 * math.sqrt(s.label.sum() / math.pi) * spacing
        assert 1.5 <= diam_mm <= 100.0
        # Target near the centre: nominal centre within 15 px, mass centre may drift with the shape.
        ys, xs = np.nonzero(s.label)
        assert abs(ys.mean() - 79.5) < 15 + 0.5 * (ys.max() - ys.min()) + 5
        assert abs(xs.mean() - 79.5) < 15 + 0.5 * (xs.max() - xs.min()) + 5


@pytest.mark.parametrize("seed", SEEDS)
def test_jitter_click_within_radius(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = make_slice(rng, size=128)
    r_eq = math.sqrt(s.label.sum() / math.pi)
    for _ in range(20):
        y, x = jitter_click(s.click, s.label, rng, max_frac=0.3)
        assert math.hypot(y - s.click[0], x - s.click[1]) <= 0.3 * r_eq + 1e-6
        assert s.label[int(round(y)), int(round(x))] == 1


def test_jitter_click_falls_back_to_original() -> None:
    label = np.zeros((20, 20), np.uint8)
    label[10, 10] = 1  # one pixel: every real move leaves it, or lands on it after rounding
    y, x = jitter_click((10.0, 10.0), label, np.random.default_rng(0), max_frac=5.0)
    assert label[int(round(y)), int(round(x))] == 1


def test_seed_streams_differ() -> None:
    a = benchmark_set(1, seed=0, backgrounds=None, size=96)[0]
    b = make_slice(training_rng(0, 0), size=96)
    assert not np.array_equal(a.image, b.image)
    c = benchmark_set(1, seed=0, backgrounds=None, size=96)[0]
    np.testing.assert_array_equal(a.image, c.image)


def _write_tiny_volumes(folder: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:10, :48, :40]
    body = ((yy - 24) / 20.0) ** 2 + ((xx - 20) / 17.0) ** 2 < 1
    ct = np.where(body, 40 + 20 * rng.standard_normal(body.shape), -1000).astype(np.int16)
    ct[:, 20:24, 15:25] = 700  # "bone"
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing((0.8, 0.8, 2.0))  # (x, y, z)
    sitk.WriteImage(img, str(folder / "ct.nii.gz"))
    mr = np.where(body, 100 + 10 * rng.standard_normal(body.shape), 0).astype(np.float32)
    mr[:2] = 0  # air-only slices: must be skipped
    img = sitk.GetImageFromArray(mr)
    img.SetSpacing((1.2, 1.2, 3.0))
    sitk.WriteImage(img, str(folder / "mr.nii.gz"))


@pytest.fixture(scope="module")
def tiny_bank(tmp_path_factory: pytest.TempPathFactory) -> BackgroundBank:
    folder = tmp_path_factory.mktemp("bg")
    _write_tiny_volumes(folder)
    return BackgroundBank.from_dir(folder)


def test_bank_from_dir(tiny_bank: BackgroundBank) -> None:
    mods = tiny_bank.modalities
    assert mods.count("CT") == 5  # every 2nd of 10 slices
    assert mods.count("MR") == 4  # z = 0 (air) skipped; 2, 4, 6, 8 kept
    for s, m, sp in zip(tiny_bank.slices, mods, tiny_bank.spacings, strict=True):
        assert s.dtype == (np.int16 if m == "CT" else np.float16)
        assert sp == pytest.approx((0.8, 0.8) if m == "CT" else (1.2, 1.2))
    n_train, n_val = len(tiny_bank.with_split("train")), len(tiny_bank.with_split("val"))
    assert n_train > 0 and n_val > 0 and n_train + n_val == len(tiny_bank)


def test_bank_save_load_roundtrip(tiny_bank: BackgroundBank, tmp_path: Path) -> None:
    path = tmp_path / "bank.npz"
    tiny_bank.save(path)
    loaded = BackgroundBank.load(path)
    assert len(loaded) == len(tiny_bank)
    assert loaded.modalities == tiny_bank.modalities
    assert loaded.spacings == tiny_bank.spacings
    assert loaded.rel_z == tiny_bank.rel_z
    assert loaded.names == tiny_bank.names
    for a, b in zip(loaded.slices, tiny_bank.slices, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert len(BackgroundBank.load(path, split="val")) == len(tiny_bank.with_split("val"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bank_sample_and_make_slice(tiny_bank: BackgroundBank, seed: int) -> None:
    img, mod = tiny_bank.sample(np.random.default_rng(seed), 64, 1.0)
    assert img.shape == (64, 64) and img.dtype == np.float32 and mod in ("CT", "MR")
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    a = make_slice(np.random.default_rng(seed), size=96, backgrounds=tiny_bank)
    b = make_slice(np.random.default_rng(seed), size=96, backgrounds=tiny_bank)
    _check_slice(a, 96)
    np.testing.assert_array_equal(a.image, b.image)


def test_bank_backgrounds_are_used(tiny_bank: BackgroundBank) -> None:
    rng = np.random.default_rng(5)
    kinds = [make_slice(rng, size=64, backgrounds=tiny_bank).kind for _ in range(10)]
    assert any(k.startswith("bank(") for k in kinds)
    bench = benchmark_set(4, seed=3, backgrounds=tiny_bank, size=64)
    assert len(bench) == 4
    for s in bench:
        _check_slice(s, 64)
        if s.kind.startswith("bank("):
            # Benchmark draws only from the "val" split.
            val_names = {tiny_bank.names[i] for i in range(len(tiny_bank.names)) if tiny_bank.rel_z[i] >= 0.8}
            assert s.kind[5:].split(",")[0] in val_names


@pytest.mark.parametrize(("lo", "hi", "spacing", "size"), [(3.0, 6.0, 1.0, 128), (40.0, 80.0, 2.0, 192)])
def test_radius_range(lo: float, hi: float, spacing: float, size: int) -> None:
    """An asked radius range gives targets of that nominal radius (in mm, on the asked grid)."""
    slices = benchmark_set(6, seed=3, backgrounds=None, spacing_mm=spacing, size=size, radius_mm=(lo, hi))
    for s in slices:
        _check_slice(s, size)
        r_nom = float(s.kind.split(" r=")[1].split("mm")[0])
        assert lo - 0.05 <= r_nom <= hi + 0.05
        # The label's equivalent radius follows the nominal one within the shapes' spread.
        r_eq = math.sqrt(s.label.sum() / math.pi) * spacing
        assert 0.3 * lo <= r_eq <= 1.6 * hi


def test_radius_range_must_fit() -> None:
    with pytest.raises(ValueError, match="coarser spacing"):
        benchmark_set(1, seed=0, backgrounds=None, spacing_mm=1.0, size=192, radius_mm=(40.0, 80.0))
    with pytest.raises(ValueError, match="lo <= hi"):
        make_slice(np.random.default_rng(0), radius_mm=(5.0, 2.0))


def test_lesions_recipe_is_the_default_and_all_sizes_changes_only_training() -> None:
    """The evaluation sets use LESIONS whatever train's default; a recipe's record is JSON and names it."""
    a = make_slice(np.random.default_rng(4), size=128)
    b = make_slice(np.random.default_rng(4), size=128, recipe=LESIONS)
    np.testing.assert_array_equal(a.image, b.image)
    rec = json.loads(json.dumps(ALL_SIZES.record()))
    assert rec["name"] == "all-sizes" and rec["grids_mm"] == [1.0, 2.0, 4.0, 8.0]
    assert recipe("lesions") is LESIONS
    with pytest.raises(ValueError, match="all-sizes"):
        recipe("organs")


def test_all_sizes_covers_3_to_80_mm_on_every_grid() -> None:
    """Each grid of the pyramid gets objects of every radius it can hold (in mm and in pixels), and
    the large ones (>= 40 mm) appear on the coarse grids as they would there."""
    rng = np.random.default_rng(21)
    by_grid: dict[float, list[tuple[float, float]]] = {}
    for _ in range(160):
        spacing = ALL_SIZES.draw_spacing(rng)
        grid = min(ALL_SIZES.grids_mm, key=lambda g: abs(math.log(spacing / g / 0.85)))
        s = make_slice(rng, size=192, spacing_mm=spacing, recipe=ALL_SIZES)
        _check_slice(s, 192)
        r_nom = float(s.kind.split(" r=")[1].split("mm")[0])
        by_grid.setdefault(grid, []).append((r_nom, r_nom / spacing))
    assert set(by_grid) == set(ALL_SIZES.grids_mm)
    radii = np.array([r for rows in by_grid.values() for r, _ in rows])
    assert radii.min() >= 3.0 - 1e-6 and radii.max() <= 80.0 + 1e-6
    assert (radii >= 40).sum() >= 10 and (radii < 10).sum() >= 10
    for rows in by_grid.values():
        px = np.array([p for _, p in rows])
        assert px.min() >= ALL_SIZES.min_radius_px - 1e-6 and px.max() <= ALL_SIZES.fit_frac * 192 + 1e-6
    assert max(p for _, p in by_grid[1.0]) > 25  # large in pixels on the fine grid
    assert max(r for r, _ in by_grid[4.0] + by_grid[8.0]) >= 40  # large in mm on the coarse grids


def test_inner_clicks_spread_over_the_inner_half() -> None:
    """The training clicks of ALL_SIZES stay inside, reach well beyond the LESIONS jitter (30 % of the
    equivalent radius) and never pass half-way to the boundary along their direction."""
    yy, xx = np.mgrid[:160, :160]
    label = ((yy - 80) ** 2 + (xx - 80) ** 2 <= 40**2).astype(np.uint8)
    rng = np.random.default_rng(5)
    clicks = np.array([move_click((80.0, 80.0), label, rng, ALL_SIZES) for _ in range(400)])
    d = np.hypot(clicks[:, 0] - 80, clicks[:, 1] - 80)
    assert all(label[int(round(y)), int(round(x))] for y, x in clicks)
    assert d.max() <= 0.5 * 40 + 1.0 and d.max() > 0.4 * 40
    assert (d > 0.3 * 40).mean() > 0.2  # beyond the old jitter's reach
    assert (d == 0).mean() == pytest.approx(1 - ALL_SIZES.click_move_p, abs=0.06)  # the rest: the centre
    assert inner_click((10.0, 10.0), np.zeros((20, 20), np.uint8), rng) == (10.0, 10.0)


def test_all_sizes_draws_vessels_inside_large_objects_without_changing_the_label() -> None:
    rng = np.random.default_rng(8)
    kinds = [make_slice(rng, size=160, spacing_mm=1.0, recipe=ALL_SIZES).kind for _ in range(40)]
    assert any("vessels-in" in k for k in kinds)
    assert not any("vessels-in" in make_slice(rng, size=160).kind for _ in range(40))
