"""One inference pipeline: a click in the app (Predictor on a volume) and the slice entry used by
training's validation, the evaluation command and the calibration (segment_slice and its wrappers)
give the same masks, and the scale rule (the pyramid of grids) is applied in one place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqpatch_core.images.intensity import Window, apply_window
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor, segment_slice, segment_working
from seqpatch_core.method.run import Coarsen

CPU = torch.device("cpu")
WINDOW = Window(-200.0, 300.0, "test")


def _volume(pixel_mm: float, modality: str):
    """A 3-slice volume with a bright ellipse in the middle slice, and its windowed middle slice."""
    yy, xx = np.mgrid[:120, :110]
    arr = np.random.default_rng(0).normal(0, 30, (3, 120, 110)).astype(np.float32)
    arr[1][((yy - 58) / 24) ** 2 + ((xx - 50) / 17) ** 2 < 1] += 250
    vol = volume_from_array(arr, spacing=(3.0, pixel_mm, pixel_mm), modality=modality)
    return vol, apply_window(arr[1], WINDOW)


@pytest.mark.parametrize("method", ["seqpatch", "unet"])
@pytest.mark.parametrize("preset", ["ct", "promise12"])
def test_a_click_in_the_app_equals_the_slice_entry_on_the_working_grid(small_models, method, preset, one_thread):
    """CT at 1.0 mm pixels: the working grid is the slice grid, so segment_working sees what the app sees."""
    vol, windowed = _volume(1.0, "CT")
    pred = Predictor(dict(small_models), CPU, coarsen=False)
    pred.set_volume(vol, window=WINDOW)
    clicks = [(58.0, 50.0), (60.5, 44.2)]
    app = pred.predict_many(1, clicks, method, preset)
    entry = segment_working(small_models[method], windowed, np.array(clicks), preset, CPU)
    for r, m in zip(app, entry, strict=True):
        np.testing.assert_array_equal(r.mask, m)
        assert r.mask.any()


@pytest.mark.parametrize("method", ["seqpatch", "unet"])
def test_a_resampled_click_equals_the_slice_entry_at_that_spacing(small_models, method, one_thread):
    """MR at 0.8 mm pixels is segmented on the 0.625-mm working grid and mapped back, both ways alike."""
    vol, windowed = _volume(0.8, "MR")
    pred = Predictor(dict(small_models), CPU, coarsen=False)
    pred.set_volume(vol, window=WINDOW)
    app = pred.predict((1, 58.0, 50.0), method, "promise12")
    net = small_models[method]
    (entry,) = segment_slice(net, windowed, [[58.0, 50.0]], "promise12", 0.8, CPU, working_spacing=0.625)
    np.testing.assert_array_equal(app.mask, entry.mask)
    assert app.working_spacing == 0.625 and app.mask.shape == (120, 110)


@pytest.mark.parametrize("radius_px,grids", [(0.5, (0.625, 1.0, 2.0, 4.0, 8.0)), (500.0, (0.625,))])
def test_the_scale_rule_is_the_predictors(small_models, radius_px, grids, one_thread):
    """segment_slice takes predict_many's rule: a click that climbs the pyramid is answered as a first
    pass on its last grid would be."""
    _, windowed = _volume(0.625, "MR")
    net = small_models["seqpatch"]
    click = np.array([[58.0, 50.0]])
    (res,) = segment_slice(net, windowed, click, "promise12", 0.625, CPU, coarsen=Coarsen(radius_px))
    assert res.mask.any(), "the small net finds the bright ellipse"
    assert res.grids_mm[: len(grids)] == grids[: len(res.grids_mm)] and res.working_spacing == res.grids_mm[-1]
    assert (len(res.grids_mm) > 1) is (radius_px < 1)
    (last,) = segment_slice(net, windowed, click, "promise12", 0.625, CPU, working_spacing=res.working_spacing,
                            coarsen=False)  # fmt: skip
    np.testing.assert_array_equal(res.mask, last.mask)
    np.testing.assert_array_equal(res.likelihood, last.likelihood)


@pytest.mark.parametrize("preset", ["ct", "promise12"])
def test_batched_fusion_on_the_device_equals_the_numpy_fusion(preset):
    """The scatter-add fusion that runs on an accelerator gives the CPU's bincount fusion, click by click
    (checked here on the CPU's torch), including patches that fall off the grid."""
    from seqpatch_core.method import rays

    cfg = rays.get_preset(preset)
    clicks = np.array([[60.3, 70.8], [8.0, 140.5], [120.0, 3.2]])
    grid = rays.patch_grid(clicks, cfg)
    lik = np.random.default_rng(1).random(grid.shape[:-1]).astype(np.float32)
    fused, cov = rays.fuse_patches_batch(torch.from_numpy(lik), torch.from_numpy(grid), (130, 150))
    for i in range(len(clicks)):
        f0, c0 = rays.fuse_patches(lik[i], grid[i], (130, 150))
        np.testing.assert_allclose(fused[i].numpy(), f0, atol=1e-6)
        np.testing.assert_allclose(cov[i].numpy(), c0, atol=1e-5)

