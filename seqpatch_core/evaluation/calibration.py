"""Calibration of the scale rule: the :class:`~seqpatch_core.method.run.Coarsen` radius of each model,
chosen on synthetic validation slices (``calibrate``).

:func:`coarsen_sweep` segments every validation slice of :func:`~seqpatch_core.evaluation.evaluate.
synthetic_set` (all sizes, 3-80 mm) on its own grid and on the coarser grids of the pyramid that a
candidate radius could send it to, then replays the rule for each candidate; :func:`markdown_sweep`
prints the tables. ``calibrate --write`` stores the chosen rule in the weights
(:func:`seqpatch_core.method.models.write_record_fields`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.base.progress import Progress
from seqpatch_core.base.tables import markdown_table
from seqpatch_core.evaluation.evaluate import synthetic_set
from seqpatch_core.inference.predictor import segment_slice
from seqpatch_core.method import rays
from seqpatch_core.method.run import Coarsen, equivalent_radius_px

__all__ = ["coarsen_sweep", "markdown_sweep", "replay"]


def replay(levels: Sequence[tuple[float, float]], radius_px: float) -> tuple[float, int]:
    """The rule replayed on one click: ``levels`` are (mask's equivalent radius in that grid's px,
    Dice) per grid of its pyramid, finest first (as far as they were computed). Returns (the Dice of
    the grid the rule stops on, that grid's index), as :meth:`Predictor.predict_many` decides."""
    i = 0
    while i + 1 < len(levels) and levels[i][0] > radius_px:
        i += 1
    return levels[i][1], i


def coarsen_sweep(
    models: dict[str, nn.Module],
    n: int,
    seed: int,
    backgrounds: str | None,
    device: torch.device,
    radii: Sequence[float],
    threshold: float = 0.5,
    progress: Progress | None = None,
) -> dict:
    """Choose each model's :class:`~seqpatch_core.method.run.Coarsen` radius on synthetic slices.

    The centre click of each of ``synthetic_set(n, seed, backgrounds)`` is segmented on the grids of
    its pyramid (:meth:`Coarsen.grids` of its own grid), one grid at a time and only as far as the
    smallest candidate radius could climb; each candidate R of ``radii`` (working px; ``inf``: the
    first grid only) is then replayed (:func:`replay`). Per model: the mean Dice for each R over all
    slices and per half, how many clicks each R sends to a coarser grid, and the
    chosen R (the best mean; ties go to the larger R, the fewer passes). Use validation seeds, never
    the benchmark's. Returns ``{"n", "seed", "radii", "methods": {name: {"table", "chosen"}}}``.
    """
    if n < 1:
        raise InputError(f"--synthetic needs at least 1 slice, got {n}")
    radii = sorted({float(r) for r in radii} | {math.inf})
    val = synthetic_set(n, seed, backgrounds)
    per: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {m: [] for m in models}
    for i, (s, preset) in enumerate(val):
        if progress is not None:
            progress(i / len(val), f"synthetic slice {i}")
        cfg = rays.get_preset(preset)
        click = np.array([s.click])
        px = (s.spacing_mm, s.spacing_mm)
        for name, net in models.items():
            levels: list[tuple[float, float]] = []
            for grid in Coarsen.grids(s.spacing_mm):
                (r,) = segment_slice(net, s.image, click, cfg, s.spacing_mm, device, threshold, None, grid, False)
                levels.append((equivalent_radius_px(r.mask, px, grid), dice(r.mask, s.label)))
                if levels[-1][0] <= radii[0]:  # no candidate sends this click further up
                    break
            per[name].append((preset, levels))
    if progress is not None:
        progress(1.0, "done")
    out: dict = {"n": n, "seed": seed, "radii": radii, "methods": {}}
    for name, items in per.items():
        table = []
        for radius in radii:
            picks = [(p, *replay(levels, radius)) for p, levels in items]
            entry = {"radius_px": radius, "dice": float(np.mean([d for _, d, _ in picks])),
                     "coarsened": int(sum(level > 0 for _, _, level in picks))}  # fmt: skip
            for half in dict.fromkeys(p for p, _, _ in picks):
                entry[f"dice_{half}"] = float(np.mean([d for p, d, _ in picks if p == half]))
            table.append(entry)
        best = max(table, key=lambda e: (round(e["dice"], 6), e["radius_px"]))
        out["methods"][name] = {"table": table, "chosen": best["radius_px"]}
    return out


def markdown_sweep(sweep: dict) -> str:
    """One table per model: radius, mean Dice (overall and per half), clicks sent coarser; * = chosen."""
    parts = []
    for name, e in sweep["methods"].items():
        halves = [k for k in e["table"][0] if k.startswith("dice_")]
        head = ["coarsen above (working px)", "Dice", *(h[5:] for h in halves), "coarser grid"]
        cells = []
        for row in e["table"]:
            mark = " *" if row["radius_px"] == e["chosen"] else ""
            r = "never" if math.isinf(row["radius_px"]) else f"{row['radius_px']:g}"
            cells.append([r + mark, f"{row['dice']:.3f}", *(f"{row[h]:.3f}" for h in halves), row["coarsened"]])
        title = f"{name} (pyramid of grids, {sweep['n']} slices, seed {sweep['seed']}):"
        parts.append(title + "\n\n" + markdown_table(head, cells))
    return "\n\n".join(parts)
