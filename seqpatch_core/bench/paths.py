"""Every inference path side by side (``bench --engines``): PyTorch float32 / bfloat16, OpenVINO and
ONNX Runtime on this CPU.

:func:`compare_paths` times the click (p50/p95 and stages, as :func:`seqpatch_core.bench.speed.run_bench`),
the 5x5 robustness grid and the 3D object on each path and checks its masks against float32 PyTorch;
:func:`paths_markdown` prints the speed table of docs/results.md. The per-click benchmark and its
helpers (compute floor, synthetic CT) are in :mod:`seqpatch_core.bench.speed`.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from seqpatch_core.base.errors import first_line
from seqpatch_core.base.tables import markdown_table
from seqpatch_core.bench.speed import bench_case, grid_points, matmul_rate, network_flops, percentiles
from seqpatch_core.inference import engines
from seqpatch_core.inference.engines import Choice, CompiledNet, EngineSpec
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.inference.propagate import propagate
from seqpatch_core.method import rays

__all__ = ["compare_paths", "paths_markdown"]


def _path_predictor(models: dict, label: str) -> Predictor:
    """A CPU predictor whose networks run on path ``label`` ("torch-float32", "openvino-bfloat16", ...),
    or, for ``"app"``, on what ``python app.py`` chooses for each network (``--engine auto``)."""
    if label == "app":
        return Predictor(models, device="cpu", dtype="auto", coarsen=False, engine="auto")
    engine, precision = label.split("-")
    dtype = torch.bfloat16 if (engine == "torch" and precision == "bfloat16") else None
    pred = Predictor(models, device="cpu", dtype=dtype, coarsen=False)
    if engine != "torch":
        for name, m in models.items():
            pred.nets[name] = CompiledNet(m, EngineSpec(engine, precision)).prepare(
                sorted({p.k for p in rays.PRESETS.values()})
            )
    pred.engines = {name: Choice(pred.nets[name], label, {}) for name in models}
    return pred


def compare_paths(
    models: dict,
    image: str | Path | None,
    label: str | Path | None = None,
    clicks: int = 10,
    warmup: int = 2,
    preset: str = "ct",
    agreement_slices: int = 32,
    paths: list[str] | None = None,
) -> dict:
    """Every inference path on this CPU side by side: per method the click's p50/p95 and stages
    (as :func:`run_bench`), the 5x5 robustness grid and the 3D object from the centre click (both
    methods), and the masks' agreement with float32 PyTorch (mean and lowest Dice over
    ``agreement_slices`` generated benchmark slices, clicked at their centres). The first path,
    ``torch-float32``, is the reference; ``ratio`` is each path's SeqPatch p50 over the reference's.
    The compute floor per precision is the network's FLOP per click over this machine's measured
    matrix-product rate in that precision. ``paths``: labels to run (default: every available one).
    """
    if paths is None:
        paths = ["torch-float32"] + (["torch-bfloat16"] if engines.native_bfloat16() else [])
        paths += [s.label for s in engines.candidates("auto")] + ["app"]
    slices = engines.check_slices(agreement_slices)
    reference = {name: engines.masks(m, slices, preset) for name, m in models.items()}
    vol, z, cy, cx = bench_case(image, label)
    grid_pts = grid_points(vol, cy, cx)
    cfg = rays.get_preset(preset)
    out: dict = {
        "device": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "usable_cores": engines.usable_threads(),
        "torch": torch.__version__,
        "image": Path(image).name if image is not None else vol.source,
        "preset": preset,
        "clicks": clicks,
        "agreement_slices": agreement_slices,
        "reference": "torch-float32",
        "floor_ms": {},
        "paths": {},
    }
    for prec, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        if prec == "float32" or engines.native_bfloat16():
            rate = matmul_rate(torch.device("cpu"), dt)
            out["floor_ms"][prec] = {m: round(network_flops(model, cfg) / rate * 1e3, 1) for m, model in models.items()}
    rng = np.random.default_rng(0)
    for path in paths:
        try:
            pred = _path_predictor(models, path)
        except Exception as exc:  # an engine that cannot take a network: reported, not fatal
            out["paths"][path] = {"error": first_line(exc, 200)}
            continue
        pred.set_volume(vol, window="auto")
        entry: dict = {}
        for method in models:
            totals, stages = [], {}
            for i in range(warmup + clicks):
                pt = (z, cy + rng.uniform(-2, 2), cx + rng.uniform(-2, 2))
                t = time.perf_counter()
                res = pred.predict(pt, method=method, preset=preset)
                if i >= warmup:
                    totals.append((time.perf_counter() - t) * 1e3)
                    for k, v in res.timings.items():
                        if k != "total_ms":
                            stages.setdefault(k, []).append(v)
            net = pred.nets[method]
            as_run = engines.AsRun(net, pred.net_dtypes.get(method, pred.dtype))
            agree = engines.agreement(reference[method], as_run, slices, preset)
            entry[method] = {
                **percentiles(totals),
                "stages": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
                **agree,
            }
        t = time.perf_counter()
        for method in models:
            pred.predict_many(z, grid_pts, method=method, preset=preset)
        entry["robustness_grid_5x5_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        prop = propagate(pred, (z, cy, cx), "seqpatch", preset) if "seqpatch" in models else None
        entry["object_3d_seqpatch_s"] = round(time.perf_counter() - t, 2)
        entry["object_3d_slices"] = len(prop.per_slice) if prop is not None else 0
        out["paths"][path] = entry
    ref = out["paths"].get("torch-float32", {}).get("seqpatch", {}).get("p50_ms")
    for entry in out["paths"].values():
        if ref and "seqpatch" in entry:
            entry["ratio"] = round(entry["seqpatch"]["p50_ms"] / ref, 3)
    # per network, as the app chooses (engines.choose): the fastest path whose masks agree
    out["fastest_agreeing"] = {}
    for m in models:
        ok = {
            p: e[m]["p50_ms"]
            for p, e in out["paths"].items()
            if m in e and e[m]["mean_dice"] >= engines.AGREEMENT
        }
        out["fastest_agreeing"][m] = min(ok, key=ok.get) if ok else None
    return out


def paths_markdown(b: dict) -> str:
    """The speed table of docs/results.md for :func:`compare_paths`."""
    rows = [
        f"Machine: {b['device']}, {b['usable_cores']} usable cores, torch {b['torch']} ({b['threads']} threads); "
        f"{b['image']}, preset {b['preset']}, {b['clicks']} clicks after warm-up; agreement with float32 PyTorch "
        f"on {b['agreement_slices']} generated benchmark slices.",
        "",
    ]
    head = ["path", "SeqPatch p50 ms", "p95", "network", "vs float32 PyTorch", "U-net p50 ms",
            "Dice agreement (SeqPatch / U-net, mean, lowest)", "5x5 grid s", "3D object s"]  # fmt: skip
    cells = []
    for path, e in b["paths"].items():
        if "error" in e:
            cells.append([path, f"failed: {e['error']}"] + [""] * (len(head) - 2))
            continue
        sp, un = e.get("seqpatch", {}), e.get("unet", {})
        agree = " / ".join(f"{r.get('mean_dice', 0):.4f} ({r.get('min_dice', 0):.4f})" for r in (sp, un))
        cells.append([
            path, sp.get("p50_ms"), sp.get("p95_ms"), f"{sp.get('stages', {}).get('network_ms', 0):.0f}",
            f"{e.get('ratio', '')}x", un.get("p50_ms"), agree, e["robustness_grid_5x5_s"],
            f"{e['object_3d_seqpatch_s']} ({e['object_3d_slices']} slices)",
        ])  # fmt: skip
    rows += markdown_table(head, cells).split("\n")
    floors = "; ".join(
        f"{prec}: " + ", ".join(f"{m} {ms} ms" for m, ms in f.items()) for prec, f in b["floor_ms"].items()
    )
    rows += ["", f"Compute floor per click (FLOP / measured matrix-product rate): {floors}."]
    best = ", ".join(f"{m} {p}" for m, p in b["fastest_agreeing"].items())
    rows.append(f"Fastest path whose masks agree with float32 PyTorch (mean Dice >= 0.995), per network: {best}.")
    return "\n".join(rows)
