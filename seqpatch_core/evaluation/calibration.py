"""Calibration of the second pass for large objects: the :class:`~seqpatch_core.inference.predictor.Coarsen`
radius of each model, chosen on synthetic validation slices (``calibrate``).

:func:`coarsen_sweep` segments every validation slice on its own working grid and, where that grid is
finer than the second pass's, once more on the coarser grid, then scores each candidate radius;
:func:`markdown_sweep` prints the tables. ``calibrate --write`` stores the chosen rule in the weights
(:func:`seqpatch_core.method.models.write_record_fields`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import evaluate_masks
from seqpatch_core.base.progress import Progress
from seqpatch_core.base.tables import markdown_table
from seqpatch_core.inference.predictor import segment_resampled, segment_working
from seqpatch_core.method import rays

__all__ = ["coarsen_sweep", "markdown_sweep"]


def coarsen_sweep(
    models: dict[str, nn.Module],
    n: int,
    seed: int,
    backgrounds: str | None,
    device: torch.device,
    radii: Sequence[float],
    to_mm: float = 1.0,
    threshold: float = 0.5,
    progress: Progress | None = None,
) -> dict:
    """Choose each model's :class:`~seqpatch_core.inference.predictor.Coarsen` radius on synthetic slices.

    Every centre click of ``training_data.validation_set(n, seed, backgrounds)`` is segmented on its own
    working grid and, where that grid is finer than ``to_mm`` (the 0.625-mm half), once more on a
    ``to_mm`` grid (:func:`segment_resampled`); a radius R then takes the second mask wherever the
    first one's equivalent radius exceeds R working pixels. Per model: the mean Dice for each R of
    ``radii`` (``inf``: never) over all slices and per half, how many slices each R redoes, and the
    chosen R (the best mean; ties go to the larger R, the fewer second passes). Use validation seeds,
    never the benchmark's. Returns ``{"n", "seed", "to_mm", "radii", "methods": {name: {...}}}``.
    """
    from seqpatch_core.method.run import Coarsen, equivalent_radius_px
    from seqpatch_core.training.batches import validation_set

    if n < 1:
        raise InputError(f"--synthetic needs at least 1 slice, got {n}")
    if not 0.2 <= to_mm <= 5.0:
        raise InputError(f"--to-mm must be between 0.2 and 5 mm, got {to_mm}")
    radii = sorted({float(r) for r in radii} | {math.inf})
    val = validation_set(n, seed, backgrounds)
    per: dict[str, list[tuple[str, float, float, float]]] = {m: [] for m in models}
    for i, (s, preset) in enumerate(val):
        if progress is not None:
            progress(i / len(val), f"synthetic slice {i}")
        cfg = rays.get_preset(preset)
        click = np.array([s.click])
        px = (s.spacing_mm, s.spacing_mm)
        fine_enough = Coarsen(0.0, to_mm).applies(s.spacing_mm)
        for name, net in models.items():
            fine = segment_working(net, s.image, click, cfg, device, threshold)[0]
            d_fine = evaluate_masks(fine, s.label, px)["dice"]
            r, d_coarse = -math.inf, d_fine  # grids at to_mm or coarser: never redone
            if fine_enough:
                coarse = segment_resampled(net, s.image, click, cfg, s.spacing_mm, to_mm, device, threshold)[0]
                r = equivalent_radius_px(fine, px, s.spacing_mm)
                d_coarse = evaluate_masks(coarse, s.label, px)["dice"]
            per[name].append((preset, r, d_fine, d_coarse))
    if progress is not None:
        progress(1.0, "done")
    out: dict = {"n": n, "seed": seed, "to_mm": to_mm, "radii": radii, "methods": {}}
    for name, items in per.items():
        table = []
        for radius in radii:
            pick = [(p, dc if r > radius else df, r > radius) for p, r, df, dc in items]
            entry = {"radius_px": radius, "dice": float(np.mean([d for _, d, _ in pick])),
                     "redone": int(sum(c for _, _, c in pick))}  # fmt: skip
            for half in dict.fromkeys(p for p, _, _ in pick):
                entry[f"dice_{half}"] = float(np.mean([d for p, d, _ in pick if p == half]))
            table.append(entry)
        best = max(table, key=lambda e: (round(e["dice"], 6), e["radius_px"]))
        out["methods"][name] = {"table": table, "chosen": best["radius_px"]}
    return out


def markdown_sweep(sweep: dict) -> str:
    """One table per model: radius, mean Dice (overall and per half), slices redone; * = chosen."""
    parts = []
    for name, e in sweep["methods"].items():
        halves = [k for k in e["table"][0] if k.startswith("dice_")]
        head = ["coarsen above (working px)", "Dice", *(h[5:] for h in halves), "redone"]
        cells = []
        for row in e["table"]:
            mark = " *" if row["radius_px"] == e["chosen"] else ""
            r = "never" if math.isinf(row["radius_px"]) else f"{row['radius_px']:g}"
            cells.append([r + mark, f"{row['dice']:.3f}", *(f"{row[h]:.3f}" for h in halves), row["redone"]])
        title = f"{name} (second pass at {sweep['to_mm']:g} mm, {sweep['n']} slices, seed {sweep['seed']}):"
        parts.append(title + "\n\n" + markdown_table(head, cells))
    return "\n\n".join(parts)
