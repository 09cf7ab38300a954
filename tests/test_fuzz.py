"""Property tests (hypothesis) of the ray geometry, fusion, post-processing, resampling and Predictor.

Random image sizes (8..300 px a side), pixel spacings (0.2..3 mm), presets and clicks inside and
well outside the image: nothing raises, sampled values stay within the image's range (or the pad
value), fused likelihoods stay in [0, 1], coverage is positive exactly around where patch pixels
landed, masks have the slice's shape. Bounded: few examples, no deadline (two shared CPU cores).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from seqpatch_core.base.errors import InputError
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method import rays
from seqpatch_core.method.models import build_model

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
MEDIUM = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                  derandomize=True)
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)

sizes = st.integers(8, 300)
spacings = st.floats(0.2, 3.0, allow_nan=False)
presets = st.sampled_from(sorted(rays.PRESETS))
aligns = st.sampled_from(["ray", "axis"])


@st.composite
def images(draw, max_side: int = 300):
    h, w = draw(st.integers(8, max_side)), draw(st.integers(8, max_side))
    seed = draw(st.integers(0, 2**31 - 1))
    lo = draw(st.floats(-2000, 2000))
    span = draw(st.floats(1e-3, 4000))
    img = np.random.default_rng(seed).random((h, w)).astype(np.float32) * np.float32(span) + np.float32(lo)
    return img


@st.composite
def clicks(draw, h: int, w: int, inside: bool | None = None):
    """A (y, x) click: inside the image, or anywhere up to 2 image sizes outside it."""
    if inside is None:
        inside = draw(st.booleans())
    if inside:
        return (draw(st.floats(0, h - 1)), draw(st.floats(0, w - 1)))
    return (draw(st.floats(-2.0 * h, 3.0 * h)), draw(st.floats(-2.0 * w, 3.0 * w)))


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@FAST
@given(data=st.data(), img=images(), preset=presets, align=aligns, pad_min=st.booleans())
def test_sampled_values_stay_within_image_range_or_pad(data, img, preset, align, pad_min):
    h, w = img.shape
    click = data.draw(clicks(h, w))
    cfg = rays.get_preset(preset, align=align)
    grid = rays.patch_grid(click, cfg)
    assert grid.shape == (cfg.n_rays, cfg.k, cfg.patch, cfg.patch, 2)
    pad = float(img.min()) if pad_min else data.draw(st.floats(-3000, 3000))
    out = rays.sample_patches(torch.from_numpy(img), torch.from_numpy(grid), pad_value=pad).numpy()
    assert out.shape == grid.shape[:-1] and np.isfinite(out).all()
    lo, hi = min(float(img.min()), pad), max(float(img.max()), pad)
    tol = 1e-4 * max(1.0, abs(lo), abs(hi))
    assert out.min() >= lo - tol and out.max() <= hi + tol
    # Inside the image, sampling is bilinear interpolation (the same as scipy's order 1).
    if 0 <= click[0] <= h - 1 and 0 <= click[1] <= w - 1:
        ref = ndimage.map_coordinates(img.astype(np.float64), np.array(click)[:, None], order=1)[0]
        c = rays.sample_patches(torch.from_numpy(img), torch.tensor([click], dtype=torch.float64), pad).item()
        assert abs(c - ref) <= tol + 1e-4 * (hi - lo)


def _footprints(grid: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(nearest pixel of every in-image sample, the up-to-4 pixels around every sample) as masks."""
    h, w = shape
    pos = grid.reshape(-1, 2)
    near = np.zeros(shape, bool)
    r = np.round(pos).astype(np.int64)
    ok = (r[:, 0] >= 0) & (r[:, 0] < h) & (r[:, 1] >= 0) & (r[:, 1] < w)
    near[r[ok, 0], r[ok, 1]] = True
    around = np.zeros(shape, bool)
    f = np.floor(pos).astype(np.int64)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = f[:, 0] + dy, f[:, 1] + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            around[yy[ok], xx[ok]] = True
    return near, around


@FAST
@given(data=st.data(), h=sizes, w=sizes, preset=presets, align=aligns, seed=st.integers(0, 2**31 - 1))
def test_fusion_in_unit_range_and_coverage_where_patches_landed(data, h, w, preset, align, seed):
    click = data.draw(clicks(h, w))
    cfg = rays.get_preset(preset, align=align)
    grid = rays.patch_grid(click, cfg)
    lik = np.random.default_rng(seed).random(grid.shape[:-1]).astype(np.float32)
    fused, cov = rays.fuse_patches(lik, grid, (h, w))
    assert fused.shape == cov.shape == (h, w) and fused.dtype == np.float32
    assert np.isfinite(fused).all() and np.isfinite(cov).all()
    assert fused.min() >= 0.0 and fused.max() <= 1.0 and cov.min() >= 0.0
    assert not fused[cov == 0].any()
    near, around = _footprints(grid, (h, w))
    assert (cov[near] > 0).all()  # every pixel nearest to a sample got weight
    assert not (cov[~around] > 0).any()  # and nothing away from the samples did
    if 0 <= click[0] <= h - 1 and 0 <= click[1] <= w - 1:
        assert cov[int(round(click[0])), int(round(click[1]))] > 0
    # Constant likelihoods fuse to that constant wherever something landed.
    c = float(data.draw(st.floats(0, 1)))
    fused_c, _ = rays.fuse_patches(np.full_like(lik, c), grid, (h, w))
    solid = cov > 1e-6
    np.testing.assert_allclose(fused_c[solid], c, atol=1e-5)


@FAST
@given(data=st.data(), h=st.integers(8, 120), w=st.integers(8, 120), seed=st.integers(0, 2**31 - 1),
       threshold=st.floats(0.05, 0.95), sigma=st.floats(0, 4))
def test_postprocess_mask_shape_and_inside(data, h, w, seed, threshold, sigma):
    rng = np.random.default_rng(seed)
    lik = ndimage.gaussian_filter(rng.random((h, w)), sigma).astype(np.float32)
    lik = (lik - lik.min()) / max(float(np.ptp(lik)), 1e-6)
    cov = (rng.random((h, w)) > data.draw(st.floats(0, 1))).astype(np.float32)
    click = data.draw(clicks(h, w))
    mask = rays.postprocess(lik, cov, click, threshold)
    assert mask.shape == (h, w) and mask.dtype == bool
    binary = (lik >= threshold) & (cov > 1e-6)
    assert not (mask & ~ndimage.binary_fill_holes(binary)).any()  # inside (holes aside)
    assert mask.any() == binary.any()
    assert ndimage.label(mask)[1] <= 1  # one object
    cy, cx = int(np.clip(round(click[0]), 0, h - 1)), int(np.clip(round(click[1]), 0, w - 1))
    if binary[cy, cx]:
        assert mask[cy, cx]  # the clicked object is the one kept


@MEDIUM  # a 300 px side at 3 mm is a 1440 px working grid: fewer examples
@given(data=st.data(), img=images(max_side=300), sy=spacings, sx=spacings,
       working=st.sampled_from(sorted(set(rays.WORKING_SPACING_MM.values())) + [2.0]))
def test_slice_grid_resampling(data, img, sy, sx, working):
    h, w = img.shape
    grid = rays.SliceGrid((h, w), (sy, sx), working)
    hw, ww = grid.working_shape
    assert hw >= 1 and ww >= 1
    work = rays.resample_to_working(img, grid)
    assert work.shape == (hw, ww) and work.dtype == np.float32 and np.isfinite(work).all()
    tol = 1e-4 * max(1.0, float(np.abs(img).max()))
    assert work.min() >= img.min() - tol and work.max() <= img.max() + tol
    back = rays.resample_to_slice(work, grid)
    assert back.shape == (h, w) and back.dtype == np.float32
    lo, hi = min(0.0, float(work.min())), max(0.0, float(work.max()))
    assert back.min() >= lo - tol and back.max() <= hi + tol
    p = np.array(data.draw(clicks(h, w)))
    np.testing.assert_allclose(grid.to_slice(grid.to_working(p)), p, rtol=1e-9, atol=1e-9)
    # The working grid reaches the slice's last pixel centre (nothing cut off), and ends within one
    # working pixel of it.
    last = grid.to_working(np.array([h - 1, w - 1], float))
    end = np.array([hw, ww], float) - 1
    assert np.all(last <= end + 1e-6) and np.all(end - last < 1.0)


@pytest.fixture(scope="module")
def tiny_models() -> dict:
    torch.manual_seed(0)
    return {"seqpatch": build_model("seqpatch", widths=(8, 16, 32)), "unet": build_model("unet", base=8)}


@SLOW
@given(data=st.data(), z=st.integers(1, 3), h=st.integers(8, 96), w=st.integers(8, 96),
       sy=spacings, sx=spacings, modality=st.sampled_from(["CT", "MR", "unknown"]),
       method=st.sampled_from(["seqpatch", "unet", "unet"]), seed=st.integers(0, 2**31 - 1))
def test_predictor_never_raises_inside_and_refuses_outside(
    data, tiny_models, z, h, w, sy, sx, modality, method, seed
):
    rng = np.random.default_rng(seed)
    base = -1000.0 if modality == "CT" else 0.0
    arr = base + rng.random((z, h, w)) * data.draw(st.floats(1.0, 3000.0))
    vol = volume_from_array(arr, spacing=(2.0, sy, sx), modality=modality)
    pred = Predictor(tiny_models, device="cpu")
    pred.set_volume(vol, window=data.draw(st.sampled_from(["auto", "soft", "mr"])))
    preset = data.draw(st.sampled_from([None, *sorted(rays.PRESETS)]))
    pz = data.draw(st.integers(0, z - 1))
    py, px = data.draw(clicks(h, w, inside=True))
    res = pred.predict((pz, py, px), method=method, preset=preset)
    assert res.mask.shape == (h, w) and res.mask.dtype == bool
    assert res.likelihood.shape == res.coverage.shape == (h, w)
    assert np.isfinite(res.likelihood).all() and res.likelihood.min() >= 0 and res.likelihood.max() <= 1
    assert res.coverage[int(round(py)), int(round(px))] > 0
    assert res.slice_index == pz
    # Well outside: a one-line InputError, never anything else.
    oy, ox = data.draw(clicks(h, w, inside=False))
    outside = not (0 <= oy <= h - 1 and 0 <= ox <= w - 1)
    if outside:
        with pytest.raises(InputError) as info:
            pred.predict((pz, oy, ox), method=method, preset=preset)
        assert "\n" not in str(info.value)
