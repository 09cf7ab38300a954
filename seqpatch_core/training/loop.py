"""Training of the sequential patch network, its ablations and the U-net baseline, on one generator.

Both model families see the same stream of synthetic slices (``seqpatch_core.data.synth``, made by
the run's recipe, ``--recipe``: :mod:`seqpatch_core.data.recipe`), the same clicks, the same
augmentations and the same loss (binary cross-entropy, as in the paper; ``--loss bce+dice`` adds a soft
Dice term), with Adam (beta1 0.95, beta2 0.99) and weight decay. Each step draws one ray preset
(``ct``, ``mr`` or ``promise12``) for all its slices and each slice its own working spacing (the
recipe's grids), so one model serves CT and MR and every grid of the Predictor's pyramid. The
sequential net learns from
the 16 ray sequences of each slice; the U-net from the square field of view around the click that the
same preset covers.

Progress is logged with the training loss and the synthetic validation Dice (the whole pipeline:
fusion, threshold, component, holes) on held-out slices (``synth.benchmark_set``: its own seed stream,
``val_seed``, which does not follow the training ``seed``, and the background bank's held-out split). A
run started from ``init`` weights validates them first, so its curve begins at its starting point and
its output is never worse than that. The best checkpoint by validation Dice is the output;
``<out>.resume.pt`` (tensors only, loaded with ``weights_only=True``) lets ``--resume`` continue, and
``<out stem>.json`` holds the record and the validation curve. The real cases are never used here.

**Seed streams.** The batches, their seed streams and the validation slices are made in
:mod:`seqpatch_core.training.batches`: the data do not depend on how many processes or loader workers
make them, and a resumed run goes on from its step count (it sees new slices).

**Several processes, GPUs or machines** (``torch.nn.parallel.DistributedDataParallel``)::

    torchrun --standalone --nproc-per-node 4 -m seqpatch_core train --model seqpatch_gn --batch 32 ...
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id RUN \
        -m seqpatch_core train --batch 64 ...          # the same command on each machine

With WORLD_SIZE > 1 in the environment (torchrun sets it, with RANK, LOCAL_RANK and the rendezvous
address) ``train`` starts a process group: NCCL on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on
the CPU. Without torchrun nothing changes: one process, no process group. ``--batch`` stays the global
batch: each of W processes takes batch/W slices of every step (``--batch`` must divide by W), rank r
the slices r·batch/W .. (r+1)·batch/W − 1, so rank r's stream is the single-process stream offset by
r·batch/W slices. Each rank's loss is the mean over its share and DDP averages the gradients, so a
step is the step one process takes on the whole batch: one and two processes take the same first
step (``tests/test_distributed.py``; to float rounding, and with ``--no-amp`` to 1e-4 in the loss).
Learning rate, stop and validation follow rank 0's clock and decisions (broadcast each step), so all
ranks stop at the same step. Rank 0 alone validates, logs and writes the checkpoint, ``<out>.resume.pt``
and the JSON record, which holds ``world_size``, ``global_batch`` and ``batch_per_process``; the others
wait for it. ``--resume`` works with any number of processes: every rank loads the weights, the
optimiser state and the step from ``<out>.resume.pt`` (on several machines ``--out`` must be on a
filesystem all of them see). Validation and checkpoints do not change with W, nor does ``--minutes``:
W processes get through up to W times the slices in the same wall-clock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqpatch_core.base.metrics import dice
from seqpatch_core.data.recipe import recipe as recipe_named
from seqpatch_core.inference.predictor import segment_working
from seqpatch_core.method import rays
from seqpatch_core.method.models import MODELS, build_model, save_checkpoint
from seqpatch_core.method.run import model_arch
from seqpatch_core.training.batches import (
    TRAIN_PRESETS,
    DeviceStream,
    SliceStream,
    resolve_generator,
    targets_for,
    validation_set,
)
from seqpatch_core.training.config import LOSSES, TrainConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- loss and step


def soft_dice_loss(logits: torch.Tensor, y: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per sample (all dimensions after the first pooled), averaged over samples.

    A sample is one slice's field of view for the U-net and one whole ray (K patches) for the
    sequential net, so every sample holds object: a single patch far out may hold none.
    """
    p = torch.sigmoid(logits).flatten(1)
    t = y.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool,
    loss_name: str = "bce",
) -> float:
    """One optimisation step (``loss_name`` from LOSSES, gradient norm clipped at 5); returns the loss.

    x, y: network input and soft target of the same shape, (B, ...) with one sample per row;
    ``amp`` runs the forward pass in bfloat16.
    """
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; choose from {', '.join(LOSSES)}")
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = F.binary_cross_entropy_with_logits(logits.float(), y)
    if loss_name == "bce+dice":
        loss = loss + soft_dice_loss(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return float(loss.detach())


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the paper's betas (0.95, 0.99) and weight decay."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.95, 0.99), weight_decay=weight_decay)


def optimizer_text(opt: torch.optim.Optimizer) -> str:
    """The record's name of an optimiser, read from the object: ``"Adam(beta1=0.95, beta2=0.99)"``.

    Class name and, where it has them, the betas of its first parameter group (the weight decay and
    learning rate are in the record's own fields).
    """
    betas = opt.param_groups[0].get("betas")
    args = f"beta1={betas[0]:g}, beta2={betas[1]:g}" if betas is not None else ""
    return f"{type(opt).__name__}({args})"


# ----------------------------------------------------------------------------- validation


def validate(model, val: list[tuple], device: torch.device, amp_dtype=None) -> float:
    """Mean Dice of the full pipeline (fusion, threshold 0.5, component, holes) on the validation slices."""
    model.eval()
    scores = [
        dice(
            segment_working(model, s.image, np.array([s.click]), rays.get_preset(preset), device, dtype=amp_dtype,
                            spacing_mm=s.spacing_mm)[0],
            s.label,
        )
        for s, preset in val
    ]
    return float(np.mean(scores))


# ----------------------------------------------------------------------------- loop


def _start_distributed(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, this process's device, whether this call started the process group).

    A process group that the caller started is used as it is. Otherwise WORLD_SIZE > 1 in the
    environment (torchrun) starts one from RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT: NCCL on
    CUDA (device cuda:LOCAL_RANK), gloo on the CPU. Without either, one process: (0, 1, device, False).
    """
    import torch.distributed as dist

    started = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if started else int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    if not dist.is_available():
        raise RuntimeError("several processes were asked for, but this PyTorch has no torch.distributed")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"training in several processes needs CUDA or the CPU, not {device.type}")
    rank = dist.get_rank() if started else int(os.environ["RANK"])
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not started:
        # the other ranks wait while rank 0 validates: on a CPU that can take minutes
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=1))
    return rank, world, device, not started


def train(tc: TrainConfig) -> dict:
    """Train ``tc.model`` for at most ``tc.minutes`` (or to a plateau, or ``tc.max_steps``); returns the final record.

    Under torchrun every process runs this (the module docstring says how the work is shared).
    """
    import torch.distributed as dist

    from seqpatch_core.method.run import pick_device

    if tc.model not in MODELS:
        raise ValueError(f"unknown model {tc.model!r}")
    if tc.loss not in LOSSES:
        raise ValueError(f"unknown loss {tc.loss!r}; choose from {', '.join(LOSSES)}")
    recipe_named(tc.recipe)  # an unknown name fails here, before any work
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    rank, world, device, owns_group = _start_distributed(pick_device(tc.device))
    try:
        if tc.slices_per_batch % world:
            from seqpatch_core.base.errors import InputError

            raise InputError(
                f"the batch ({tc.slices_per_batch} slices) is the global batch and must divide by the number of "
                f"processes ({world}): give --batch a multiple of {world}"
            )
        record = _train(tc, rank, world, device)
        if owns_group:
            # every rank done before any tears the group down: gloo aborted a process (std::terminate,
            # exit -6) whose peer destroyed the group first, about one run in four on a loaded CPU
            dist.barrier()
        return record
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(tc: TrainConfig, rank: int, world: int, device: torch.device) -> dict:
    import torch.distributed as dist

    def agree(value: float) -> float:
        """Rank 0's value on every rank: decisions on time (the ranks' clocks differ) and on validation."""
        if world == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t.item())

    torch.manual_seed(tc.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # few distinct shapes (one per preset): autotune each
    out = Path(tc.out)
    resume_path = out.with_suffix(".resume.pt")
    curve_path = out.with_suffix(".json")
    resuming = tc.resume and bool(agree(resume_path.is_file()))
    if resuming and not resume_path.is_file():
        raise FileNotFoundError(
            f"process {rank} cannot see {resume_path}: with several machines, --out must be on a filesystem "
            "that all of them see"
        )
    model = build_model(tc.model, **(tc.model_config or {})).to(device)
    if tc.init and not resuming:
        # continue from an earlier run's best weights (fresh optimiser); recorded in the checkpoint
        start_from = build_model(tc.model, checkpoint=tc.init)
        model.load_state_dict(start_from.state_dict())
        if rank == 0:
            log.info("initialised from %s", tc.init)
    arch = model_arch(model)
    if device.type == "cpu" and tc.amp:
        # oneDNN's bfloat16 convolutions are fastest on NHWC tensors (about 25 % per step here)
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, tc.lr, tc.weight_decay)
    state = {"step": 0, "samples": 0, "elapsed_s": 0.0, "best": -1.0, "history": [], "round": 0, "stale": 0}
    if resuming:
        # every rank loads all of it (weights, optimiser, step): the world size may differ from the last run's
        saved = torch.load(resume_path, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        state.update(json.loads(saved["state_json"]))
        state["round"] += 1
        if rank == 0:
            log.info("resumed %s at step %d (%.1f min)", tc.model, state["step"], state["elapsed_s"] / 60)
    net = model  # what the training step runs: the model itself, or its DDP wrapper
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = torch.bfloat16 if tc.amp else None
    recipe = recipe_named(tc.recipe)
    val = (
        validation_set(tc.val_slices, tc.val_seed, tc.backgrounds, tc.atlas_ratio, tc.atlas_bank, recipe)
        if rank == 0
        else []
    )
    rps = tc.rays_per_slice if arch == "seqpatch" else 0
    share = tc.slices_per_batch // world
    generator = resolve_generator(tc.generator, device)
    stream_args = dict(atlas_bank=tc.atlas_bank, atlas_ratio=tc.atlas_ratio, start_step=state["step"],
                       first_slice=rank * share, recipe=recipe)  # fmt: skip
    if generator == "torch":
        # the synthetic slices are drawn on the training device, a step at a time, in this process
        loader = DeviceStream(tc.seed, share, tc.backgrounds, device, tc.data, rps, **stream_args)
    else:
        stream = SliceStream(tc.seed, share, tc.backgrounds, state["round"], tc.data, rps, **stream_args)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=tc.workers,
            persistent_workers=tc.workers > 0,
            prefetch_factor=4 if tc.workers > 0 else None,
            pin_memory=device.type == "cuda",
        )
    budget = tc.minutes * 60.0
    start = time.perf_counter() - state["elapsed_s"]
    last_eval = time.perf_counter()
    losses: list[float] = []

    def lr_at(frac: float) -> float:
        warm = min(1.0, (state["step"] + 1) / 200)
        return tc.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def mean_loss() -> float | None:
        """Mean training loss since the last evaluation, over all ranks (a collective: every rank calls it)."""
        if world == 1:
            return float(np.mean(losses)) if losses else None
        t = torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t[0] / t[1]) if t[1] > 0 else None

    def record(elapsed: float) -> dict:
        rec = _record(tc, state, elapsed, arch, opt)
        rec["training"].update(world_size=world, global_batch=tc.slices_per_batch, batch_per_process=share,
                               generator=generator)
        return rec

    def evaluate_and_save(final: bool = False) -> None:
        # every rank calls this; rank 0 alone validates, logs and writes
        elapsed = time.perf_counter() - start
        train_loss = mean_loss()
        losses.clear()
        if rank != 0:
            return
        vd = validate(model, val, device, amp_dtype)
        model.train()
        entry = {
            "step": state["step"],
            "samples": state["samples"],
            "minutes": round(elapsed / 60, 2),
            "train_loss": round(train_loss, 4) if train_loss is not None else None,
            "val_dice": round(vd, 4),
        }
        state["history"].append(entry)
        improved = vd > state["best"] + 0.003
        if vd > state["best"]:
            state["best"] = vd
            save_checkpoint(model, out, **record(elapsed))
        state["stale"] = 0 if improved else state["stale"] + 1
        state["elapsed_s"] = elapsed
        torch.save(
            {"model": model.state_dict(), "optim": opt.state_dict(), "state_json": json.dumps(state)}, resume_path
        )
        curve_path.write_text(json.dumps({**record(elapsed), "final": final}, indent=1))
        log.info(
            "%s step %d samples %d %.1f min loss %s val Dice %.4f (best %.4f)",
            tc.model,
            entry["step"],
            entry["samples"],
            entry["minutes"],
            entry["train_loss"],
            vd,
            state["best"],
        )

    if tc.init and state["step"] == 0:
        # the starting point on this run's validation slices: the run's output is never worse than it
        evaluate_and_save()
        last_eval = time.perf_counter()
    net.train()
    for batch in loader:
        elapsed = agree(time.perf_counter() - start)
        if elapsed >= budget:
            break
        cfg = rays.get_preset(batch.preset)
        x, y = targets_for(arch, batch, cfg, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(elapsed / budget)
        # each rank's loss is the mean over its share of the batch and DDP averages the gradients over
        # the ranks: the step is that of one process on the whole batch
        losses.append(train_step(net, opt, x, y, tc.amp, tc.loss))
        state["step"] += 1
        state["samples"] += len(batch) * world
        if tc.max_steps and state["step"] >= tc.max_steps:
            break
        if agree(time.perf_counter() - last_eval >= tc.eval_every_s):
            evaluate_and_save()
            last_eval = time.perf_counter()
            if agree(state["stale"] >= tc.patience and elapsed > 0.4 * budget):
                if rank == 0:
                    log.info("validation Dice has plateaued (%d evaluations without +0.003): stopping", tc.patience)
                break
    evaluate_and_save(final=True)
    if world == 1:
        return json.loads(curve_path.read_text())
    rec = [json.loads(curve_path.read_text()) if rank == 0 else None]
    dist.broadcast_object_list(rec, src=0)  # the record, on machines that do not share rank 0's filesystem
    return rec[0]


def _record(
    tc: TrainConfig, state: dict, elapsed: float, arch: str, opt: torch.optim.Optimizer | None = None
) -> dict:
    """The JSON record of a run; ``opt``: its optimiser (default: the one make_optimizer builds)."""
    if opt is None:
        opt = make_optimizer(torch.nn.Linear(1, 1), tc.lr, tc.weight_decay)
    return {
        "name": tc.model,
        "ray": {
            "train_presets": TRAIN_PRESETS,
            "default": "ct (CT), promise12 (MR)",
        },
        "training": {
            **{k: v for k, v in asdict(tc).items() if k not in ("out", "resume", "device")},
            "arch": arch,
            "wall_clock_min": round(elapsed / 60, 2),
            "steps": state["step"],
            "samples_seen": state["samples"],
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "loss": {"bce": "binary cross-entropy", "bce+dice": "binary cross-entropy + soft Dice"}[tc.loss],
            "optimizer": optimizer_text(opt),
            "recipe_constants": recipe_named(tc.recipe).record(),
            "data": f"seqpatch_core.data.synth, recipe {tc.recipe} (synthetic objects in procedural phantoms and "
            "real background anatomy)"
            + (f" + labelled pairs from {tc.data}" if tc.data else "")
            + (f" + real atlas structures ({tc.atlas_ratio:.0%} of slices)" if tc.atlas_ratio > 0 else ""),
            "atlas": _atlas_record(tc),
        },
        "validation": {"synthetic_val_dice_best": round(state["best"], 4), "curve": state["history"]},
    }


def _atlas_record(tc: TrainConfig) -> dict | None:
    """The atlas mix of a run: ratio, bank and its sources (None without atlases)."""
    if tc.atlas_ratio <= 0:
        return None
    from seqpatch_core.data.atlases import DEFAULT_DIR, bank_sources

    bank = tc.atlas_bank or str(DEFAULT_DIR)
    return {"ratio": tc.atlas_ratio, "bank": bank, "sources": bank_sources(bank), "split": "train (left/midline)"}


def plot_curves(records: dict[str, list[str | Path]], out_png: str | Path) -> None:
    """Validation Dice against samples seen and wall-clock minutes, one line per model.

    records: label -> the JSON records of that model's consecutive training runs (``<out stem>.json``),
    chained so that a continued run starts where the previous one ended.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, paths in records.items():
        samples, minutes, dices = [], [], []
        s0 = m0 = 0.0
        for p in paths:
            curve = json.loads(Path(p).read_text())["validation"]["curve"]
            samples += [s0 + c["samples"] for c in curve]
            minutes += [m0 + c["minutes"] for c in curve]
            dices += [c["val_dice"] for c in curve]
            s0, m0 = samples[-1], minutes[-1]
        ax1.plot(samples, dices, label=label)
        ax2.plot(minutes, dices, label=label)
    ax1.set_xscale("log")
    ax1.set_xlabel("training slices seen")
    ax2.set_xlabel("wall-clock minutes, chained runs (machines: weights/README.md)")
    for ax in (ax1, ax2):
        ax.set_ylabel("synthetic validation Dice")
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
