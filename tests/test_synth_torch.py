"""The batched torch generator (synth_torch) and training's device stream, on the CPU."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from seqpatch_core.bench.speed import generator_benchmark, percentiles_text
from seqpatch_core.data.recipe import ALL_SIZES
from seqpatch_core.data.synth import make_slice
from seqpatch_core.data.synth_torch import DeviceSynth
from seqpatch_core.method import rays
from seqpatch_core.training.batches import SLICE_SIZE, DeviceStream, resolve_generator, targets_for
from seqpatch_core.training.config import TrainConfig
from seqpatch_core.training.loop import train
from tests.helpers import example


@pytest.fixture(scope="module")
def synth():
    return DeviceSynth("cpu", SLICE_SIZE)


@pytest.mark.parametrize("spacing", [0.6, 1.1])
def test_slices_hold_one_filled_object_with_its_click_inside(synth, spacing, one_thread):
    out = synth.slices(12, spacing, seed=3)
    img, lab, click = out.images, out.labels, out.clicks
    assert img.shape == lab.shape == (12, SLICE_SIZE, SLICE_SIZE) and img.dtype == torch.float32
    assert lab.dtype == torch.bool and click.shape == (12, 2)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    for i in range(12):
        m = lab[i].numpy()
        _, n = ndi.label(m, structure=np.ones((3, 3), bool))
        assert n == 1, f"slice {i}: {n} components"
        assert np.array_equal(ndi.binary_fill_holes(m), m), f"slice {i} has holes"
        y, x = (int(round(v)) for v in click[i].tolist())
        assert m[y, x], f"slice {i}: click outside the object"
        # the object lies near the centre, radius within synth's range (1.5 px .. 0.22 x size, lobes and spikes)
        ys, xs = np.nonzero(m)
        assert max(abs(ys.mean() - SLICE_SIZE / 2), abs(xs.mean() - SLICE_SIZE / 2)) < 0.35 * SLICE_SIZE
        assert 4 <= m.sum() <= np.pi * (0.5 * SLICE_SIZE) ** 2


def test_the_object_differs_from_its_surroundings(synth, one_thread):
    """Contrast: on most slices the object's mean differs from a ring just outside it by > 0.01."""
    out = synth.slices(24, 1.0, seed=5)
    differ = 0
    for img, lab in zip(out.images.numpy(), out.labels.numpy(), strict=True):
        ring = ndi.binary_dilation(lab, iterations=4) & ~ndi.binary_dilation(lab, iterations=1)
        differ += abs(img[lab].mean() - img[ring].mean()) > 0.01
    assert differ >= 18


def test_a_seed_gives_the_same_batch_and_another_seed_another(synth, one_thread):
    a, b, c = synth.batch(4, 0.8, seed=9), synth.batch(4, 0.8, seed=9), synth.batch(4, 0.8, seed=10)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("images", "labels", "clicks"))
    assert not torch.equal(a.images, c.images)


def test_augmented_batch_keeps_the_click_on_the_object_after_jitter_and_flip(synth, one_thread):
    out = synth.batch(16, 0.7, seed=1)
    assert out.clicks.dtype == torch.float64 and out.clicks.device.type == "cpu"
    assert out.labels.dtype == torch.float32
    for lab, (y, x) in zip(out.labels, out.clicks.tolist(), strict=True):
        assert lab[int(round(y)), int(round(x))] == 1


def test_background_bank_slices_are_used(tmp_path, one_thread):
    from seqpatch_core.data.backgrounds import BackgroundBank

    (tmp_path / "ct.nii.gz").write_bytes(example("synthetic_ct")[0].read_bytes())
    bank = BackgroundBank.from_dir(tmp_path)
    assert len(bank) > 0
    gen = DeviceSynth("cpu", 96, bank)
    out = gen.slices(8, 1.0, seed=2)
    assert out.images.shape == (8, 96, 96) and bool(out.labels.flatten(1).any(1).all())


@pytest.mark.parametrize("arch", ["seqpatch", "unet"])
def test_device_stream_mixes_real_pairs_and_feeds_the_networks(tmp_path, arch, one_thread):
    img, lab = example("synthetic_ct")
    (tmp_path / "a_image.nii.gz").write_bytes(img.read_bytes())
    (tmp_path / "a_label.nii.gz").write_bytes(lab.read_bytes())
    stream = DeviceStream(4, 6, None, torch.device("cpu"), str(tmp_path), rays_per_slice=3 if arch == "seqpatch" else 0)
    batch = next(iter(stream))
    assert batch.images.shape == (6, SLICE_SIZE, SLICE_SIZE) and batch.clicks.shape == (6, 2)
    assert batch.preset in ("ct", "mr", "promise12")
    assert torch.equal(stream.batch(0).images, batch.images)  # a step's batch depends on the step alone
    cfg = rays.get_preset(batch.preset)
    x, y = targets_for(arch, batch, cfg, torch.device("cpu"))
    assert x.shape == y.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    if arch == "seqpatch":
        assert batch.rays.shape == (6, 3) and x.shape[:2] == (18, cfg.k)


def test_generator_choice():
    assert resolve_generator("auto", torch.device("cpu")) == "numpy"
    assert resolve_generator("auto", torch.device("cuda")) == "torch"
    assert resolve_generator("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="generator"):
        resolve_generator("jax", torch.device("cpu"))


@pytest.mark.slow
def test_training_on_the_torch_generator_records_it(tmp_path, one_thread):
    rec = train(TrainConfig(
        model="unet_w16", out=str(tmp_path / "u.safetensors"), backgrounds=None, workers=0, slices_per_batch=2,
        eval_every_s=1e6, val_slices=2, device="cpu", amp=False, minutes=1.0, max_steps=2, generator="torch",
    ))  # fmt: skip
    assert rec["training"]["generator"] == "torch" and rec["training"]["steps"] == 2


def test_generator_benchmark_reports_both_generators(one_thread):
    out = generator_benchmark(torch.device("cpu"), None, n=2, repeats=1)
    assert len(out["numpy_objects"]["radius_px_p10_p50_p90"]) == 3
    assert out["torch_objects"]["contrast_p10_p50_p90"][1] > 0
    assert out["numpy_1_thread_slices_per_s"] > 0 and out["torch_cpu_slices_per_s"] > 0
    assert "torch_device" not in out
    assert percentiles_text(out["numpy_objects"]).count(" / ") == 4


@pytest.mark.parametrize("spacing", [1.0, 4.0])
def test_all_sizes_on_the_device_follows_the_numpy_generator(spacing, one_thread):
    """The torch generator reads the same recipe: on one grid its objects' equivalent radii (median and
    90th percentile) are those of synth.make_slice's within a third, and its moved clicks stay inside."""
    dev = DeviceSynth("cpu", SLICE_SIZE, recipe=ALL_SIZES)
    out = dev.batch(24, spacing, seed=7)
    lab = out.labels.numpy() > 0
    for m, (y, x) in zip(lab, out.clicks.tolist(), strict=True):
        assert m[int(round(y)), int(round(x))]
    r_torch = np.sqrt(lab.reshape(24, -1).sum(1) / np.pi)
    rng = np.random.default_rng(7)
    r_numpy = [np.sqrt(make_slice(rng, SLICE_SIZE, spacing, recipe=ALL_SIZES).label.sum() / np.pi) for _ in range(24)]
    for q in (50, 90):
        a, b = np.percentile(r_torch, q), np.percentile(r_numpy, q)
        assert abs(a - b) <= max(a, b) / 3 + 1.0, (q, a, b)
    assert r_torch.max() > (12 if spacing == 1.0 else 4)
