"""train, resume and curves on tiny budgets (seconds, phantom backgrounds, a small U-net)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from seqpatch_core.cli.main import main
from seqpatch_core.data.recipe import ALL_SIZES
from seqpatch_core.method import rays
from seqpatch_core.method.models import build_model
from seqpatch_core.training.batches import make_batch, targets_for, validation_set
from seqpatch_core.training.config import TrainConfig
from seqpatch_core.training.loop import make_optimizer, soft_dice_loss, train, train_step


@pytest.mark.slow
def test_train_then_resume_writes_a_loadable_checkpoint(tmp_path, one_thread):
    out = tmp_path / "unet_w16.safetensors"
    cfg = dict(
        model="unet_w16",
        out=str(out),
        backgrounds=None,
        workers=0,
        slices_per_batch=2,
        eval_every_s=1.0,
        val_slices=2,
        device="cpu",
        amp=False,
    )
    first = train(TrainConfig(minutes=0.08, **cfg))
    assert out.is_file() and out.with_suffix(".resume.pt").is_file()
    assert first["training"]["steps"] >= 1 and first["training"]["samples_seen"] == 2 * first["training"]["steps"]
    assert 0.0 <= first["validation"]["synthetic_val_dice_best"] <= 1.0
    # resume continues the same run: steps and samples only grow, the curve keeps its history
    second = train(TrainConfig(minutes=0.16, resume=True, **cfg))
    assert second["training"]["steps"] > first["training"]["steps"]
    assert len(second["validation"]["curve"]) > len(first["validation"]["curve"])
    model = build_model("unet_w16", checkpoint=out)
    assert model.record["training"]["loss"] == "binary cross-entropy"
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    # the curves command draws the record
    png = tmp_path / "curves.png"
    assert main(["curves", f"U-net={out.with_suffix('.json')}", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow
def test_continued_runs_with_other_seeds_validate_on_the_same_slices_from_their_start(tmp_path, one_thread):
    base = dict(
        model="unet_w16", backgrounds=None, workers=0, slices_per_batch=2, eval_every_s=1e6,
        val_slices=2, device="cpu", amp=False, minutes=0.02,
    )
    first = train(TrainConfig(out=str(tmp_path / "a.safetensors"), seed=0, **base))
    init = str(tmp_path / "a.safetensors")
    runs = [train(TrainConfig(out=str(tmp_path / f"s{s}.safetensors"), seed=s, init=init, **base)) for s in (5, 6)]
    starts = [r["validation"]["curve"][0] for r in runs]
    # the starting weights are validated before the first step, on slices that --seed does not change
    assert [s["step"] for s in starts] == [0, 0]
    assert starts[0]["val_dice"] == starts[1]["val_dice"]
    assert starts[0]["val_dice"] == pytest.approx(first["validation"]["curve"][-1]["val_dice"], abs=0.02)
    # and the output is never worse than the start
    assert all(r["validation"]["synthetic_val_dice_best"] >= s["val_dice"] for r, s in zip(runs, starts, strict=True))
    assert runs[0]["training"]["val_seed"] == 1000


@pytest.mark.parametrize("rays_per_slice", [0, 3, 16])
def test_ray_subset_takes_whole_sequences_of_the_chosen_rays(rays_per_slice):
    rng = np.random.default_rng(5)
    batch = make_batch(rng, 2, None, rays_per_slice=rays_per_slice)
    cfg = rays.get_preset(batch.preset)
    x, y = targets_for("seqpatch", batch, cfg, torch.device("cpu"))
    n = rays_per_slice if 0 < rays_per_slice < cfg.n_rays else cfg.n_rays
    assert x.shape == y.shape == (2 * n, cfg.k, 1, cfg.patch, cfg.patch)
    if batch.rays is None:
        return
    assert all(len(set(r.tolist())) == n for r in batch.rays)  # distinct rays per slice
    full = dataclasses.replace(batch, rays=None)
    xf, _ = targets_for("seqpatch", full, cfg, torch.device("cpu"))
    xf = xf.reshape(2, cfg.n_rays, *xf.shape[1:])
    picked = torch.stack([xf[i, batch.rays[i]] for i in range(2)]).reshape(x.shape)
    torch.testing.assert_close(x, picked)


def test_soft_dice_loss_is_zero_for_a_perfect_answer_and_near_one_for_its_opposite():
    y = torch.zeros(3, 15, 1, 8, 8)
    y[:, :4, :, 2:6, 2:6] = 1.0  # object in the first patches of each ray, as at a click
    good = torch.where(y > 0, 20.0, -20.0)
    assert soft_dice_loss(good, y) < 1e-3
    assert soft_dice_loss(-good, y) > 0.95
    # pooled per sample: a sample whose patches hold no object at all still has a finite loss
    assert torch.isfinite(soft_dice_loss(torch.zeros(2, 5), torch.zeros(2, 5)))


@pytest.mark.parametrize("loss", ["bce", "bce+dice"])
@pytest.mark.slow
def test_train_step_with_each_loss_lowers_it_on_a_fixed_batch(loss, one_thread):
    torch.manual_seed(0)
    model = build_model("unet_w16")
    opt = make_optimizer(model, 1e-3, 0.0)
    x = torch.rand(2, 1, 32, 32)
    y = (x > 0.5).float()
    first = train_step(model, opt, x, y, amp=False, loss_name=loss)
    for _ in range(30):
        last = train_step(model, opt, x, y, amp=False, loss_name=loss)
    assert last < first
    with pytest.raises(ValueError, match="unknown loss"):
        train_step(model, opt, x, y, amp=False, loss_name="l2")


def test_validation_of_the_all_sizes_recipe_holds_large_objects():
    """A third of the synthetic validation slices are large objects (20-80 mm at 2 mm) under ALL_SIZES,
    each clicked at its centre and in its inner half; under LESIONS the set is the one every earlier
    phase validated on."""
    val = validation_set(6, 1000, None, recipe=ALL_SIZES)
    assert [p for _, p in val] == ["ct", "ct", "promise12", "promise12", "ct", "ct"] * 2
    # each slice clicked at its centre, then once anywhere in its inner half (as training clicks)
    for (centre, _), (moved, _) in zip(val[:6], val[6:], strict=True):
        assert moved.image is centre.image and moved.click != centre.click
        assert moved.label[round(moved.click[0]), round(moved.click[1])]
    large = [s for s, _ in val[4:6]]
    assert all(s.spacing_mm == ALL_SIZES.val_large_spacing_mm for s in large)
    assert all(20.0 <= float(s.kind.split(" r=")[1].split("mm")[0]) <= 80.0 for s in large)
    old = validation_set(6, 1000, None)
    assert [s.spacing_mm for s, _ in old] == [1.0, 1.0, 1.0, 0.625, 0.625, 0.625]  # centre clicks only
