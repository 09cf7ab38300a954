"""Calibration of the scale rule: the :class:`~seqpatch_core.method.run.Coarsen` radius of each model,
chosen on synthetic validation slices (``calibrate``).

:func:`coarsen_sweep` segments every validation slice of :func:`~seqpatch_core.evaluation.evaluate.
synthetic_set` (all sizes, 3-80 mm) on its own grid and on the coarser grids of the pyramid that a
candidate radius could send it to, then replays the rule for each candidate (radius, growth); :func:`markdown_sweep`
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


def replay(
    levels: Sequence[tuple[float, float, float]], radius_px: float, growth: float | None = None
) -> tuple[float, int, int]:
    """The rule replayed on one click: ``levels`` are (grid mm, the mask's equivalent radius in that
    grid's px, Dice) per grid of its pyramid, finest first (as far as they were computed). Returns
    (the Dice of the grid the rule answers with, that grid's index, the passes it took), as
    :meth:`Predictor.predict_many` decides (:class:`~seqpatch_core.method.run.Coarsen`)."""
    i = 0
    while i + 1 < len(levels) and levels[i][1] > radius_px:
        finer_mm, coarser_mm = levels[i][0] * levels[i][1], levels[i + 1][0] * levels[i + 1][1]
        if growth is not None and coarser_mm <= growth * finer_mm:
            return levels[i][2], i, i + 2  # the finer answer stands; the coarser pass was spent
        i += 1
    return levels[i][2], i, i + 1


def coarsen_sweep(
    models: dict[str, nn.Module],
    n: int,
    seed: int,
    backgrounds: str | None,
    device: torch.device,
    radii: Sequence[float],
    threshold: float = 0.5,
    progress: Progress | None = None,
    growths: Sequence[float | None] = (None,),
) -> dict:
    """Choose each model's :class:`~seqpatch_core.method.run.Coarsen` rule on synthetic slices.

    The centre click of each of ``synthetic_set(n, seed, backgrounds)`` is segmented on the grids of
    its pyramid (:meth:`Coarsen.grids` of its own grid), one grid at a time and only as far as the
    smallest candidate radius could climb; each candidate (R, growth) of ``radii`` x ``growths``
    (R in working px, ``inf``: the first grid only; growth None: every climb kept) is then replayed
    (:func:`replay`). Per model: the mean Dice for each candidate over all slices and per half, how
    many clicks it answers from a coarser grid, its mean passes, and the chosen candidate (the best
    mean; ties go to fewer passes, then the larger R). Use validation seeds, never the benchmark's.
    Returns ``{"n", "seed", "radii", "growths", "methods": {name: {"table", "chosen"}}}``, chosen as
    ``{"radius_px", "growth"}``.
    """
    if n < 1:
        raise InputError(f"--synthetic needs at least 1 slice, got {n}")
    radii = sorted({float(r) for r in radii} | {math.inf})
    growths = sorted({None if g is None else float(g) for g in growths}, key=lambda g: -1.0 if g is None else g)
    val = synthetic_set(n, seed, backgrounds)
    per: dict[str, list[tuple[str, list[tuple[float, float, float]]]]] = {m: [] for m in models}
    for i, (s, preset) in enumerate(val):
        if progress is not None:
            progress(i / len(val), f"synthetic slice {i}")
        cfg = rays.get_preset(preset)
        click = np.array([s.click])
        px = (s.spacing_mm, s.spacing_mm)
        for name, net in models.items():
            levels: list[tuple[float, float, float]] = []
            for grid in Coarsen.grids(s.spacing_mm):
                (r,) = segment_slice(net, s.image, click, cfg, s.spacing_mm, device, threshold, None, grid, False)
                levels.append((grid, equivalent_radius_px(r.mask, px, grid), dice(r.mask, s.label)))
                if levels[-1][1] <= radii[0]:  # no candidate sends this click further up
                    break
            per[name].append((preset, levels))
    if progress is not None:
        progress(1.0, "done")
    out: dict = {"n": n, "seed": seed, "radii": radii, "growths": growths, "methods": {}}
    for name, items in per.items():
        table = []
        for radius in radii:
            for growth in growths if math.isfinite(radius) else [None]:
                picks = [(p, *replay(levels, radius, growth)) for p, levels in items]
                entry = {"radius_px": radius, "growth": growth, "dice": float(np.mean([d for _, d, _, _ in picks])),
                         "coarsened": int(sum(level > 0 for _, _, level, _ in picks)),
                         "passes": float(np.mean([k for _, _, _, k in picks]))}  # fmt: skip
                for half in dict.fromkeys(p for p, _, _, _ in picks):
                    entry[f"dice_{half}"] = float(np.mean([d for p, d, _, _ in picks if p == half]))
                table.append(entry)
        best = max(table, key=lambda e: (round(e["dice"], 6), -e["passes"], e["radius_px"]))
        out["methods"][name] = {"table": table, "chosen": {"radius_px": best["radius_px"], "growth": best["growth"]}}
    return out


def markdown_sweep(sweep: dict) -> str:
    """One table per model: radius, growth, mean Dice (overall and per half), clicks answered from a
    coarser grid, mean passes; * = chosen."""
    parts = []
    for name, e in sweep["methods"].items():
        halves = [k for k in e["table"][0] if k.startswith("dice_")]
        head = ["coarsen above (working px)", "finer stands below growth", "Dice", *(h[5:] for h in halves),
                "coarser grid", "passes"]  # fmt: skip
        cells = []
        for row in e["table"]:
            chosen = (row["radius_px"], row["growth"]) == (e["chosen"]["radius_px"], e["chosen"]["growth"])
            r = "never" if math.isinf(row["radius_px"]) else f"{row['radius_px']:g}"
            g = "-" if row["growth"] is None else f"{row['growth']:g}"
            cells.append([r + (" *" if chosen else ""), g, f"{row['dice']:.3f}", *(f"{row[h]:.3f}" for h in halves),
                          row["coarsened"], f"{row['passes']:.2f}"])  # fmt: skip
        title = f"{name} (pyramid of grids, {sweep['n']} slices, seed {sweep['seed']}):"
        parts.append(title + "\n\n" + markdown_table(head, cells))
    return "\n\n".join(parts)
