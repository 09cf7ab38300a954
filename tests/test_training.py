"""train, resume and curves on tiny budgets (seconds, phantom backgrounds, a small U-net)."""

import json

import torch

from seqpatch_core.__main__ import main
from seqpatch_core.models import build_model
from seqpatch_core.training import TrainConfig, train


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
