"""train, resume and curves on tiny budgets (seconds, phantom backgrounds, a small U-net)."""

import json

import numpy as np
import pytest
import torch

from seqpatch_core import rays
from seqpatch_core.__main__ import main
from seqpatch_core.models import build_model
from seqpatch_core.training import TrainConfig, make_batch, targets_for, train


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


@pytest.mark.parametrize("rays_per_slice", [0, 3, 16])
def test_ray_subset_takes_whole_sequences_of_the_chosen_rays(rays_per_slice):
    rng = np.random.default_rng(5)
    batch = make_batch(rng, 2, None, rays_per_slice=rays_per_slice)
    cfg = rays.get_preset(batch["preset"])
    x, y = targets_for("seqpatch", batch, cfg, torch.device("cpu"))
    n = rays_per_slice if 0 < rays_per_slice < cfg.n_rays else cfg.n_rays
    assert x.shape == y.shape == (2 * n, cfg.k, 1, cfg.patch, cfg.patch)
    if "rays" not in batch:
        return
    assert all(len(set(r.tolist())) == n for r in batch["rays"])  # distinct rays per slice
    full = dict(batch)
    del full["rays"]
    xf, _ = targets_for("seqpatch", full, cfg, torch.device("cpu"))
    xf = xf.reshape(2, cfg.n_rays, *xf.shape[1:])
    picked = torch.stack([xf[i, batch["rays"][i]] for i in range(2)]).reshape(x.shape)
    torch.testing.assert_close(x, picked)
