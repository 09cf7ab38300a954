"""weights/train_gpu.sh end to end on the CPU for a few steps, as the GPU machine would run it.

The GPU machine has PyTorch, numpy, scipy and safetensors but neither SimpleITK nor gradio: the script
runs here with both hidden (modules of those names that refuse to import, first on PYTHONPATH), on tiny
caches made by the test (a background bank of two procedural slices, a prepared tiny atlas), with two
steps of each network and two slices of each validation set. Slow: about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from seqpatch_core.data import atlases
from seqpatch_core.data.backgrounds import BackgroundBank
from tests.helpers import ROOT
from tests.test_atlases import tiny_atlas_source


def _tiny_background_bank(path) -> None:
    """Two 96 x 96 slices, a CT one (HU, training split) and an MR one (validation split), saved as .npz."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    body = (yy - 48) ** 2 + (xx - 48) ** 2 < 40**2
    ct = np.where(body, 40 + 20 * rng.standard_normal((96, 96)), -1000).astype(np.int16)
    mr = np.where(body, 300 + 30 * rng.standard_normal((96, 96)), 0).astype(np.float16)
    BackgroundBank([ct, mr], [(1.5, 1.5), (1.5, 1.5)], ["CT", "MR"], [0.2, 0.9], ["ct:z0", "mr:z0"]).save(path)


@pytest.mark.slow
def test_train_gpu_script_runs_end_to_end_on_the_cpu_without_simpleitk_or_gradio(tmp_path):
    _tiny_background_bank(tmp_path / "backgrounds.npz")
    atlases.prepare_atlases(tmp_path / "atlases", [tiny_atlas_source(tmp_path)])
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for name in ("SimpleITK", "gradio"):
        (hidden / f"{name}.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT)]),
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "BACKGROUNDS": str(tmp_path / "backgrounds.npz"),
        "ATLASES": str(tmp_path / "atlases"),
        "SEQPATCH_BATCH": "2",
        "UNET_BATCH": "2",
        "MAX_STEPS": "2",
        "EVAL_EVERY": "1e6",
        "VAL_SLICES": "3",
        "EVAL_SYNTHETIC": "2",
        "EVAL_ATLAS": "2",
        "WORKERS": "0",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(ROOT / "weights" / "train_gpu.sh"), "5", "0.5", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    logs = "".join(f"\n--- {p.name}\n{p.read_text(encoding='utf-8')[-3000:]}" for p in sorted(out.glob("*.log")))
    assert run.returncode == 0, run.stdout + run.stderr + logs
    for name in ("seqpatch", "unet"):
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["training"]["steps"] == 2 and rec["training"]["recipe"] == "all-sizes"
        assert rec["training"]["recipe_constants"]["grids_mm"] == [1.0, 2.0, 4.0, 8.0]
        assert rec["training"]["atlas"]["ratio"] == 0.5
        assert (out / f"{name}.safetensors").is_file()
    for name in ("synthetic", "atlas"):
        assert json.loads((out / f"eval_{name}.json").read_text())
    synthetic = json.loads((out / "eval_synthetic.json").read_text())
    assert {r["click_kind"] for r in synthetic["rows"]} == {"centre", "inner"}  # a user's click on an organ too
    assert not list(out.glob("*.resume.pt"))  # only small files come back
    assert max(p.stat().st_size for p in out.iterdir()) < 20e6
