"""Ray geometry, sampling exactness, fusion and post-processing."""

import numpy as np
import pytest
import torch

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.method import rays


@pytest.mark.parametrize("n", [1, 4, 16, 7])
def test_angles_evenly_spaced(n):
    a = rays.ray_angles(n)
    assert a.shape == (n,)
    assert np.allclose(np.diff(np.r_[a, 2 * np.pi]), 2 * np.pi / n)


@pytest.mark.parametrize("preset", ["ct", "mr", "promise12"])
def test_centres_at_stride_distances(preset):
    cfg = rays.get_preset(preset)
    c = rays.patch_centres([10.0, 20.0], cfg)
    assert c.shape == (16, cfg.k, 2)
    d = np.linalg.norm(c - np.array([10.0, 20.0]), axis=-1)
    assert np.allclose(d, cfg.stride * np.arange(cfg.k)[None, :])
    # every ray starts at the click
    assert np.allclose(c[:, 0], [10.0, 20.0])


def test_presets_match_paper():
    assert (rays.PRESETS["ct"].k, rays.PRESETS["ct"].stride) == (15, 4.0)
    assert (rays.PRESETS["mr"].k, rays.PRESETS["mr"].stride) == (8, 4.0)
    assert (rays.PRESETS["promise12"].k, rays.PRESETS["promise12"].stride) == (12, 6.0)
    assert all(p.n_rays == 16 and p.patch == 32 for p in rays.PRESETS.values())
    with pytest.raises(InputError):
        rays.get_preset("nope")


@pytest.mark.parametrize("align", ["ray", "axis"])
def test_patch_grid_centre_and_orientation(align):
    cfg = rays.RayConfig(n_rays=4, k=3, stride=5, patch=4, align=align)
    g = rays.patch_grid([0.0, 0.0], cfg)
    assert g.shape == (4, 3, 4, 4, 2)
    # the mean of a patch's sampling positions is its centre
    assert np.allclose(g.mean(axis=(2, 3)), rays.patch_centres([0.0, 0.0], cfg))
    # ray 1 points along +y (angle pi/2): for "ray" patches, columns run along +y
    step = g[1, 0, 0, 1] - g[1, 0, 0, 0]
    assert np.allclose(step, [1.0, 0.0] if align == "ray" else [0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("pad", [0.0, -3.5])
def test_bilinear_sampling_of_a_ramp_is_exact(pad):
    h, w = 40, 50
    img = np.add.outer(np.arange(h) * 2.0, np.arange(w) * 0.5).astype(np.float32)
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(0, h - 1, 200), rng.uniform(0, w - 1, 200)]
    got = rays.sample_patches(torch.tensor(img), torch.tensor(pts, dtype=torch.float32), pad_value=pad).numpy()
    assert np.allclose(got, pts[:, 0] * 2 + pts[:, 1] * 0.5, atol=1e-4)
    # far outside reads the pad value
    out = rays.sample_patches(torch.tensor(img), torch.tensor([[-10.0, -10.0], [500, 3]]), pad_value=pad)
    assert np.allclose(out.numpy(), pad)


@pytest.mark.parametrize("click", [(0, 0), (0, 99), (119, 0), (119, 99), (0, 50), (60, 0), (119, 40), (60, 99)])
def test_clicks_on_every_corner_and_edge(click):
    img = torch.rand(120, 100)
    cfg = rays.get_preset("ct")
    g = torch.tensor(rays.patch_grid(click, cfg), dtype=torch.float32)
    p = rays.sample_patches(img, g)
    assert p.shape == (16, 15, 32, 32)
    fused, cov = rays.fuse_patches(p.numpy(), g.numpy(), (120, 100))
    assert cov[click] > 0
    mask = rays.postprocess(fused, cov, click)
    assert mask.shape == (120, 100)


@pytest.mark.parametrize("align", ["ray", "axis"])
@pytest.mark.parametrize("centre,radius", [((60, 50), 25), ((30, 40), 12), ((60, 3), 20)])
def test_fusion_of_true_patch_masks_rebuilds_disc(align, centre, radius):
    h, w = 120, 100
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2).astype(np.float32)
    cfg = rays.RayConfig(align=align)
    g = rays.patch_grid(centre, cfg)
    p = rays.sample_patches(torch.tensor(disc), torch.tensor(g, dtype=torch.float32)).numpy()
    fused, cov = rays.fuse_patches(p, g, (h, w))
    assert fused.min() >= 0 and fused.max() <= 1
    assert dice(rays.postprocess(fused, cov, centre), disc > 0) >= 0.99


def test_centre_weight_peaks_in_the_middle():
    wgt = rays.centre_weight(32)
    assert wgt.shape == (32, 32)
    assert wgt.max() <= 1 and wgt[15, 15] > wgt[0, 0] > 0


def test_postprocess_keeps_clicked_component_and_fills_holes():
    lik = np.zeros((50, 50), np.float32)
    lik[5:20, 5:20] = 0.9
    lik[10:13, 10:13] = 0.1  # a hole
    lik[30:45, 30:45] = 0.9  # another object
    cov = np.ones_like(lik)
    m = rays.postprocess(lik, cov, (8, 8))
    assert m[11, 11] and not m[35, 35] and m.sum() == 225
    # a click between objects takes the nearest one
    m2 = rays.postprocess(lik, cov, (26, 26))
    assert m2[35, 35] and not m2[8, 8]
    assert not rays.postprocess(lik * 0, cov, (8, 8)).any()


@pytest.mark.parametrize("spacing", [(0.627, 0.627), (0.5, 1.2), (2.0, 2.0)])
def test_slice_grid_round_trip(spacing):
    grid = rays.SliceGrid((64, 80), spacing, 1.0)
    pts = np.array([[0.0, 0.0], [63, 79], [10.5, 3.25]])
    assert np.allclose(grid.to_slice(grid.to_working(pts)), pts)
    img = np.add.outer(np.arange(64.0), np.arange(80.0)).astype(np.float32)
    w = rays.resample_to_working(img, grid)
    assert w.shape == grid.working_shape
    back = rays.resample_to_slice(w, grid)
    assert back.shape == (64, 80)
    # a linear ramp survives the round trip away from the far edges (when not smoothed)
    if min(spacing) >= 1.0:
        assert np.allclose(back[:40, :40], img[:40, :40], atol=1e-3)


def test_fov_paste_round_trip():
    cfg = rays.get_preset("ct")
    lik = np.random.default_rng(0).random((cfg.fov, cfg.fov)).astype(np.float32)
    fused, cov = rays.paste_fov(lik, (5.0, 200.0), cfg, (100, 210))
    g = rays.fov_grid((5.0, 200.0), cfg).astype(int)
    inside = (g[..., 0] >= 0) & (g[..., 0] < 100) & (g[..., 1] >= 0) & (g[..., 1] < 210)
    assert np.allclose(fused[g[inside][:, 0], g[inside][:, 1]], lik[inside])
    assert cov.sum() == inside.sum()
