"""Training in several processes (torchrun, DistributedDataParallel over gloo on the CPU).

The stream tests are fast; the torchrun runs start real processes (a narrow sequential net, one
intra-op thread each) and take about half a minute together on two cores.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqpatch_core.cli.main import main
from seqpatch_core.training.batches import Batch, SliceStream

ROOT = Path(__file__).resolve().parent.parent

#: A quick run: narrow sequential net, 2 rays per slice, 2 validation slices, phantoms only, CPU.
QUICK = [
    "--model", "seqpatch", "--model-config", '{"widths": [8, 16, 32]}', "--batch", "2", "--rays-per-slice", "2",
    "--workers", "0", "--val-slices", "2", "--threads", "1", "--device", "cpu", "--backgrounds", "",
]


def _train(tmp: Path, name: str, procs: int, *args: str, timeout: float = 120) -> dict:
    """Runs ``train`` under torchrun in ``procs`` processes; returns its JSON record."""
    out = tmp / name / "m.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    cmd += ["-m", "seqpatch_core", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [*cmd, *QUICK, *args, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.with_suffix(".json").read_text())


def _batches(stream: SliceStream, workers: int, n: int) -> list[Batch]:
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    got = []
    for batch in loader:
        got.append(batch)
        if len(got) == n:
            return got
    return got


def test_the_global_batch_does_not_depend_on_processes_or_workers():
    whole = _batches(SliceStream(3, 4, None, 0, rays_per_slice=2), 0, 3)
    # two processes' shares (slices 0-1 and 2-3 of each step), the second one from two loader workers
    first = _batches(SliceStream(3, 2, None, 0, rays_per_slice=2, first_slice=0), 0, 3)
    second = _batches(SliceStream(3, 2, None, 5, rays_per_slice=2, first_slice=2), 2, 3)
    for w, a, b in zip(whole, first, second, strict=True):
        assert w.preset == a.preset == b.preset  # one preset per step, on every process
        for key in ("images", "labels", "clicks", "rays"):
            torch.testing.assert_close(torch.cat([getattr(a, key), getattr(b, key)]), getattr(w, key), rtol=0, atol=0)
    # the steps differ from each other, and a resumed stream continues where the step count is
    assert not torch.equal(whole[0].images, whole[1].images)
    later = _batches(SliceStream(3, 4, None, 1, rays_per_slice=2, start_step=2), 0, 1)[0]
    torch.testing.assert_close(later.images, whole[2].images, rtol=0, atol=0)


@pytest.mark.slow
def test_torchrun_two_processes_train_and_record_the_world_size(tmp_path):
    rec = _train(tmp_path, "ddp", 2, "--minutes", "0.3", "--eval-every", "1e9")
    out = tmp_path / "ddp" / "m.safetensors"
    assert out.is_file() and out.with_suffix(".resume.pt").is_file()
    t = rec["training"]
    assert t["world_size"] == 2 and t["global_batch"] == 2 and t["batch_per_process"] == 1
    assert t["steps"] >= 1 and t["samples_seen"] == 2 * t["steps"]
    assert rec["final"] and rec["validation"]["curve"][-1]["step"] == t["steps"]
    from seqpatch_core.method.models import build_model

    assert build_model("seqpatch", checkpoint=out).record["training"]["world_size"] == 2


@pytest.mark.slow
def test_one_and_two_processes_take_the_same_first_step(tmp_path, one_thread):
    args = ("--minutes", "5", "--max-steps", "1", "--eval-every", "1e9", "--no-amp")
    two = _train(tmp_path, "two", 2, *args)
    # the same command in this process: no torchrun, one process (as plain ``python -m seqpatch_core``)
    assert main(["train", *QUICK, *args, "--out", str(tmp_path / "one" / "m.safetensors")]) == 0
    one = json.loads((tmp_path / "one" / "m.json").read_text())
    assert (one["training"]["world_size"], two["training"]["world_size"]) == (1, 2)
    a, b = (r["validation"]["curve"][-1] for r in (one, two))
    assert a["step"] == b["step"] == 1 and a["samples"] == b["samples"] == 2
    # the loss of the first step (the record rounds it to 4 decimals), averaged over the two processes
    assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 + 1e-9
    # and the same update: DDP's averaged gradient is the gradient of the whole batch
    wa, wb = (torch.load(tmp_path / n / "m.resume.pt", weights_only=True)["model"] for n in ("one", "two"))
    for key, value in wa.items():
        torch.testing.assert_close(wb[key], value, rtol=0, atol=1e-6)
