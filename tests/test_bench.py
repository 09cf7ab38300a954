"""The bench command's measurements and tables: on a generated CT slice with small networks, and
LiteMedSAM's encoder paths with the shipped weights."""

import os

import pytest
import torch

from seqpatch_core.bench.speed import markdown, network_flops, run_bench
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models.litemedsam import LITEMEDSAM_WEIGHTS
from seqpatch_core.method.rays import get_preset

needs_litemedsam = pytest.mark.skipif(not LITEMEDSAM_WEIGHTS.is_file(), reason="weights/litemedsam.safetensors absent")


@pytest.mark.slow
def test_bench_reports_every_figure(small_models, one_thread):
    pred = Predictor(dict(small_models), device="cpu")
    b = run_bench(pred, None, clicks=2, warmup=1, with_load=False, variants=True, train_step=True)
    for m in ("seqpatch", "unet"):
        r = b[m]
        assert 0 < r["p50_ms"] <= r["p95_ms"]
        assert {"sampling_ms", "network_ms", "fusion_ms", "postprocess_ms"} <= set(r["stages"])
        assert r["gflops_per_click"] > 0 and r["floor_ms"] > 0 and r["parameters"] > 0
        assert set(r["network_variants_ms"]) == {
            "float32",
            "float32_channels_last",
            "bfloat16",
            "bfloat16_channels_last",
        }
        ts = r["train_step"]
        assert ts["ms_per_slice"] > 0 and ts["slices_per_s"] > 0
    # the training-step timing trains a copy: the predictor's weights are unchanged
    before = {k: v.clone() for k, v in small_models["seqpatch"].state_dict().items()}
    run_bench(pred, None, clicks=1, warmup=0, with_load=False, train_step=True)
    assert all(torch.equal(v, small_models["seqpatch"].state_dict()[k]) for k, v in before.items())
    assert b["robustness_grid_5x5_s"] > 0 and b["matmul_gflops"] > 0
    table = markdown(b)
    assert "| seqpatch |" in table and "| unet |" in table and "robustness grid" in table
    assert "training step" in table


@pytest.mark.slow
def test_flops_of_the_full_network_match_the_paper_layout():
    from seqpatch_core.method.models import build_model

    # 240 patches of 32 x 32 through the 1.37 M-parameter network: about 110.9 GFLOP per click
    flops = network_flops(build_model("seqpatch"), get_preset("ct"))
    assert 100e9 < flops < 120e9


@pytest.mark.slow
def test_bench_engines_compares_every_path_with_its_agreement(small_models, one_thread, tmp_path, monkeypatch):
    """bench --engines: each path's click times, grid, 3D object and Dice against float32 PyTorch."""
    from seqpatch_core.bench.paths import compare_paths, paths_markdown
    from seqpatch_core.inference import engines

    if not engines.installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setenv("SEQPATCH_CACHE", str(tmp_path))
    paths = ["torch-float32", "onnxruntime-float32"]
    b = compare_paths(dict(small_models), None, clicks=1, warmup=1, agreement_slices=2, paths=paths)
    assert list(b["paths"]) == paths and b["reference"] == "torch-float32"
    for path in paths:
        e = b["paths"][path]
        for m in ("seqpatch", "unet"):
            assert 0 < e[m]["p50_ms"] <= e[m]["p95_ms"] and "network_ms" in e[m]["stages"]
            assert 0.99 <= e[m]["min_dice"] <= e[m]["mean_dice"] <= 1.0
        assert e["robustness_grid_5x5_s"] > 0 and e["object_3d_seqpatch_s"] > 0
    assert b["paths"]["torch-float32"]["ratio"] == 1.0
    assert b["paths"]["torch-float32"]["seqpatch"]["mean_dice"] == 1.0
    assert set(b["fastest_agreeing"]) == {"seqpatch", "unet"} and set(b["fastest_agreeing"].values()) <= set(paths)
    assert b["floor_ms"]["float32"]["seqpatch"] > 0
    table = paths_markdown(b)
    assert "| onnxruntime-float32 |" in table and "Compute floor" in table


@pytest.mark.slow
@needs_litemedsam
def test_bench_litemedsam_has_a_row_per_installed_encoder_path(tmp_path):
    """bench --litemedsam: float32 PyTorch and every compiled path installed here, each with its
    encoder and decoder times and its box answers' agreement with PyTorch. The command runs in a
    process of its own: with LiteMedSAM's compiled encoders loaded into the test process, the
    distributed tests that follow ended the interpreter with a segmentation fault."""
    import json
    import subprocess
    import sys

    from helpers import ROOT

    from seqpatch_core.inference import engines

    out = tmp_path / "b.json"
    p = subprocess.run(
        [sys.executable, "-m", "seqpatch_core", "bench", "--litemedsam", "--clicks", "1", "--agreement-slices", "1",
         "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "SEQPATCH_CACHE": str(tmp_path)},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    installed = ["torch-float32"] + [s.label for s in engines.candidates("auto")]
    assert list(r["paths"]) == installed and r["reference"] == "torch-float32"
    for e in r["paths"].values():
        assert e["encoder"]["n"] == 1 and e["decoder"]["n"] == 5
        assert e["encoder"]["min_ms"] > e["decoder"]["min_ms"] > 0 and e["encoder"]["cpu_p50_ms"] > 0
        assert 0 <= e["min_dice"] <= e["mean_dice"] <= 1.0
    assert r["paths"]["torch-float32"]["mean_dice"] == 1.0
    assert r["fastest_agreeing"] in installed
    assert all(f"| {path} |" in p.stdout for path in installed) and "encoder p50 ms" in p.stdout
