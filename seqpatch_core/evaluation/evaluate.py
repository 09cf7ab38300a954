"""Slice-wise evaluation of the segmentation methods against reference labels.

Two sources of cases:

* a real volume with its label (:func:`evaluate_volume`): every slice z that holds the label is
  clicked, at the label's mass centre on that slice (the nearest label pixel when the centre falls
  outside it), through the same :class:`~seqpatch_core.inference.predictor.Predictor` path the app uses;
* held-out synthetic slices (:func:`evaluate_synthetic`): ``training.batches.validation_set`` (half at
  1.0 mm with preset ``ct``, half at 0.625 mm with ``promise12``; the background bank's ``"val"``
  split), segmented on their working grid exactly like training's validation
  (:func:`segment_working`).

Click modes (:func:`parse_clicks`): ``centroid`` (one click per slice at the centre above) or
``jitter:N`` (N clicks per slice moved from the centre by a uniform distance of up to 20 % of the
slice object's equivalent radius ``sqrt(area / pi)``, in a uniform direction, staying inside the
object: :func:`seqpatch_core.data.synth.jitter_click`). Jitter is seeded by ``SeedSequence([seed, 13])``,
apart from the synthetic slices' own stream. In jitter mode the centre click is evaluated as well,
so the summary reports the Dice lost by moving the click ("dice_lost" = mean centre Dice - mean
jittered Dice, per slice then averaged).

Metrics are :func:`seqpatch_core.base.metrics.evaluate_masks` on 2D slices with the slice's in-plane
spacing (y, x) in mm: Dice, CD-x/y/z (cd_z is 0 on 2D slices), HD95, ABD (mm) and aRVD.

Beside the per-method summary, results are split by object size (:func:`size_breakdown`) and the
first method is compared with each other one slice by slice (:func:`paired_comparison`: mean Dice
difference, bootstrap CI, Wilcoxon signed-rank test), so a difference can be told from noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import evaluate_masks, mask_click
from seqpatch_core.base.progress import Progress
from seqpatch_core.base.tables import markdown_table as _table
from seqpatch_core.data import synth
from seqpatch_core.data.atlases import AtlasBank
from seqpatch_core.inference.predictor import Predictor, segment_adaptive, segment_resampled, segment_working
from seqpatch_core.method import rays
from seqpatch_core.training.batches import SLICE_SIZE, validation_set

log = logging.getLogger(__name__)

__all__ = [
    "JITTER_FRAC",
    "METRICS",
    "evaluate_atlas",
    "evaluate_synthetic",
    "evaluate_volume",
    "markdown_size_table",
    "markdown_paired",
    "markdown_table",
    "paired_comparison",
    "parse_clicks",
    "size_breakdown",
    "slice_clicks",
    "summarize",
]

#: Largest click displacement of ``jitter:N``, as a fraction of the object's equivalent radius.
JITTER_FRAC = 0.2
#: Metrics summarised per method (keys of ``evaluate_masks``), with their table headers.
METRICS: dict[str, str] = {
    "dice": "Dice",
    "cd_x": "CD-x (mm)",
    "cd_y": "CD-y (mm)",
    "cd_z": "CD-z (mm)",
    "hd95": "HD95 (mm)",
    "abd": "ABD (mm)",
}

#: Bins of object size for :func:`size_breakdown`: the reference's equivalent radius on the slice, mm.
SIZE_BINS_MM: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, math.inf)

def parse_clicks(spec: str) -> tuple[str, int]:
    """``"centroid"`` -> ("centroid", 1); ``"jitter:N"`` (N >= 1) -> ("jitter", N); else InputError."""
    text = str(spec).strip().lower()
    if text == "centroid":
        return "centroid", 1
    if text.startswith("jitter:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            n = 0
        if n >= 1:
            return "jitter", n
    raise InputError(f"unknown click mode {spec!r}; use centroid or jitter:N (N >= 1)")


def _jitter_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 13]))


def slice_clicks(
    label: np.ndarray, mode: str, n: int, rng: np.random.Generator, centre: tuple[float, float] | None = None
) -> list[tuple[float, float]]:
    """Clicks (y, x) in slice px on a 2D label (H, W) for one click mode.

    The first click is always the object's centre (``centre`` or :func:`mask_click`); ``jitter``
    appends ``n`` jittered clicks (see the module docstring).
    """
    c = centre if centre is not None else mask_click(label)
    clicks = [(float(c[0]), float(c[1]))]
    if mode == "jitter":
        clicks += [synth.jitter_click(c, label, rng, max_frac=JITTER_FRAC) for _ in range(n)]
    return clicks


def _rows_for_slice(
    masks_by_method: dict[str, list[np.ndarray]],
    ref: np.ndarray,
    clicks: Sequence[tuple[float, float]],
    spacing_yx: tuple[float, float],
    case: dict,
    coarsened: dict[str, list[bool]] | None = None,
) -> list[dict]:
    """One row per (method, click): the case fields, the click, whether the click was segmented
    again on the coarser grid (``coarsened``, per method and click) and the metrics."""
    rows = []
    for method, masks in masks_by_method.items():
        redone = (coarsened or {}).get(method) or [False] * len(masks)
        for i, (mask, click) in enumerate(zip(masks, clicks, strict=True)):
            m = evaluate_masks(mask, ref, spacing_yx)
            rows.append(
                {
                    "method": method,
                    **case,
                    "click": [round(float(click[0]), 3), round(float(click[1]), 3)],
                    "click_kind": "centre" if i == 0 else "jitter",
                    "coarsened": bool(redone[i]),
                    **m,
                }
            )
    return rows


def _select(rows: list[dict], mode: str) -> list[dict]:
    """The rows the summary is about: centre clicks (centroid mode) or jittered ones."""
    kind = "centre" if mode == "centroid" else "jitter"
    return [r for r in rows if r["click_kind"] == kind]


def evaluate_volume(
    predictor: Predictor,
    label: np.ndarray,
    methods: Sequence[str],
    clicks: str = "centroid",
    seed: int = 0,
    preset: str | None = None,
    threshold: float = 0.5,
    progress: Progress | None = None,
) -> dict:
    """Evaluate ``methods`` on every labelled slice of the predictor's volume.

    label: (z, y, x) of the volume's shape, non-zero = object. All clicks of one slice go through
    one :meth:`Predictor.predict_many` batch per method. Returns ``{"clicks", "seed", "spacing_zyx",
    "slices": [z...], "rows": [...], "summary": {method: ...}, "by_size": [...]}`` (see
    :func:`summarize` and :func:`size_breakdown`).
    """
    mode, n = parse_clicks(clicks)
    vol = predictor.volume
    if vol is None:
        raise InputError("no volume loaded: load an image first")
    lab = np.asarray(label) != 0
    if lab.shape != vol.shape:
        raise InputError(f"label shape {lab.shape} differs from the image's {vol.shape} (z, y, x)")
    zs = [int(z) for z in np.flatnonzero(lab.reshape(lab.shape[0], -1).any(axis=1))]
    if not zs:
        raise InputError("the label is empty: nothing to evaluate")
    spacing_yx = (float(vol.spacing[1]), float(vol.spacing[2]))
    rng = _jitter_rng(seed)
    rows: list[dict] = []
    for i, z in enumerate(zs):
        if progress is not None:
            progress(i / len(zs), f"slice {z}")
        pts = slice_clicks(lab[z], mode, n, rng)
        masks, redone = {}, {}
        for m in methods:
            res = predictor.predict_many(z, pts, m, preset=preset, threshold=threshold)
            masks[m] = [r.mask for r in res]
            redone[m] = [r.coarsened for r in res]
        rows += _rows_for_slice(masks, lab[z], pts, spacing_yx, {"case": vol.source, "z": z}, redone)
    if progress is not None:
        progress(1.0, "done")
    return {
        "source": vol.source,
        "clicks": clicks,
        "seed": seed,
        "spacing_zyx": list(vol.spacing),
        "slices": zs,
        "rows": rows,
        "summary": summarize(rows, methods, mode),
        "by_size": size_breakdown(rows, methods, mode),
        "paired": paired_comparison(rows, methods, mode),
    }


def evaluate_synthetic(
    models: dict[str, nn.Module],
    n: int,
    seed: int,
    backgrounds: str | None,
    device: torch.device,
    clicks: str = "centroid",
    threshold: float = 0.5,
    progress: Progress | None = None,
    working_spacing: float | None = None,
    coarsen: bool = True,
) -> dict:
    """Evaluate ``models`` (name -> network) on ``n`` held-out synthetic slices.

    The slices are ``training.batches.validation_set(n, seed, backgrounds)``; each is already a windowed
    working-grid image, so it is segmented by :func:`segment_working` with the slice's preset.
    ``working_spacing`` (mm) segments each slice resampled to that spacing instead
    (:func:`segment_resampled`), scored against the label on the slice's own grid: how the result
    depends on the working resolution. Otherwise, with ``coarsen``, each model's
    :class:`~seqpatch_core.inference.predictor.Coarsen` rule applies (:func:`segment_adaptive`), as in the app.
    Returns the same structure as :func:`evaluate_volume`
    (``case`` is the slice index), plus ``"by_preset"``: ``{preset: {"summary", "by_size"}}``.
    """
    if n < 1:
        raise InputError(f"--synthetic needs at least 1 slice, got {n}")
    if working_spacing is not None and not 0.2 <= working_spacing <= 5.0:
        raise InputError(f"--working-spacing must be between 0.2 and 5 mm, got {working_spacing}")
    mode, k = parse_clicks(clicks)
    val = validation_set(n, seed, backgrounds)
    rng = _jitter_rng(seed)
    rows: list[dict] = []
    for i, (s, preset) in enumerate(val):
        if progress is not None:
            progress(i / len(val), f"synthetic slice {i}")
        cfg = rays.get_preset(preset)
        pts = slice_clicks(s.label, mode, k, rng, centre=s.click)
        clicks_w = np.array(pts)  # a synthetic slice is its own working grid
        masks, redone = {}, {}
        for name, net in models.items():
            if working_spacing is not None:
                masks[name] = segment_resampled(
                    net, s.image, clicks_w, cfg, s.spacing_mm, working_spacing, device, threshold
                )
            elif coarsen:
                masks[name], redone[name] = segment_adaptive(
                    net, s.image, clicks_w, cfg, s.spacing_mm, device, threshold
                )
            else:
                masks[name] = segment_working(net, s.image, clicks_w, cfg, device, threshold)
        case = {"case": i, "z": 0, "preset": preset, "spacing_mm": s.spacing_mm, "kind": s.kind}
        rows += _rows_for_slice(masks, s.label, pts, (s.spacing_mm, s.spacing_mm), case, redone)
    if progress is not None:
        progress(1.0, "done")
    # the two halves differ in working spacing and ray preset: each gets its own summary
    by_preset: dict[str, dict] = {}
    for preset in dict.fromkeys(r["preset"] for r in rows):
        half = [r for r in rows if r["preset"] == preset]
        by_preset[preset] = {
            "summary": summarize(half, list(models), mode),
            "by_size": size_breakdown(half, list(models), mode),
        }
    return {
        "source": f"synthetic (n={n}, seed={seed}, backgrounds={backgrounds or 'phantoms'}"
        + (f", segmented at {working_spacing} mm)" if working_spacing else ", one pass)" if not coarsen else ")"),
        "clicks": clicks,
        "seed": seed,
        "slices": list(range(len(val))),
        "rows": rows,
        "summary": summarize(rows, list(models), mode),
        "by_size": size_breakdown(rows, list(models), mode),
        "paired": paired_comparison(rows, list(models), mode),
        "by_preset": by_preset,
    }


def evaluate_atlas(models: dict, n: int, seed: int, bank_path: str | Path, device, clicks: str = "centroid",
                   threshold: float = 0.5, coarsen: bool = True) -> dict:
    """Evaluate ``models`` on ``n`` held-out (right-hemisphere) atlas objects drawn with
    ``SeedSequence([seed, 17])`` at the MR working spacing with preset ``promise12``; the same result
    structure as :func:`evaluate_synthetic`."""
    if n < 1:
        raise InputError(f"--atlas needs at least 1 object, got {n}")
    mode, k = parse_clicks(clicks)
    bank = AtlasBank(bank_path)
    rng, jrng = np.random.default_rng(np.random.SeedSequence([seed, 17])), _jitter_rng(seed)
    cfg, rows = rays.get_preset("promise12"), []
    for i in range(n):
        s = bank.sample(rng, SLICE_SIZE, "val")
        pts = slice_clicks(s.label, mode, k, jrng, centre=s.click)
        masks, redone = {}, {}
        for name, net in models.items():
            if coarsen:
                masks[name], redone[name] = segment_adaptive(net, s.image, np.array(pts), cfg, s.spacing_mm,
                                                             device, threshold)
            else:
                masks[name] = segment_working(net, s.image, np.array(pts), cfg, device, threshold)
        case = {"case": i, "z": 0, "preset": "promise12", "spacing_mm": s.spacing_mm, "kind": s.kind}
        rows += _rows_for_slice(masks, s.label, pts, (s.spacing_mm, s.spacing_mm), case, redone)
    names = list(models)
    return {"source": f"atlas val (n={n}, seed={seed}, sources={','.join(bank.ids())})", "clicks": clicks,
            "seed": seed, "slices": list(range(n)), "rows": rows, "summary": summarize(rows, names, mode),
            "by_size": size_breakdown(rows, names, mode), "paired": paired_comparison(rows, names, mode)}


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def summarize(rows: list[dict], methods: Sequence[str], mode: str = "centroid") -> dict:
    """Per method: ``{metric: {"mean", "sd"}}`` over the mode's rows, ``"n"`` (rows), ``"slices"`` and
    ``"coarsened"`` (rows segmented again on the coarser grid).

    The sd is the sample standard deviation (0 for one row). In jitter mode also
    ``"dice_centre"`` (mean Dice of the centre clicks) and ``"dice_lost"``: the mean over slices of
    (centre Dice - mean jittered Dice).
    """
    out: dict[str, dict] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        sel = _select(mine, mode)
        if not sel:
            continue
        entry: dict = {k: _mean_sd([r[k] for r in sel]) for k in METRICS}
        entry["n"] = len(sel)
        entry["slices"] = len({(r["case"], r["z"]) for r in sel})
        entry["coarsened"] = sum(bool(r.get("coarsened")) for r in sel)
        if mode == "jitter":
            centre = {(r["case"], r["z"]): r["dice"] for r in mine if r["click_kind"] == "centre"}
            lost: dict[tuple, list[float]] = {}
            for r in sel:
                lost.setdefault((r["case"], r["z"]), []).append(centre[(r["case"], r["z"])] - r["dice"])
            entry["dice_centre"] = _mean_sd(list(centre.values()))
            entry["dice_lost"] = _mean_sd([float(np.mean(v)) for v in lost.values()])
        out[method] = entry
    return out


def size_breakdown(rows: list[dict], methods: Sequence[str], mode: str = "centroid") -> list[dict]:
    """Dice and area bias by object size: one entry per non-empty bin of :data:`SIZE_BINS_MM`.

    The size is the reference's equivalent radius ``sqrt(area / pi)`` (mm) on the clicked slice.
    Each entry: ``{"lo", "hi", "n", method: {"dice": mean, "area_ratio": median predicted /
    reference area}}``. An area ratio far from 1 in opposite directions for small and large objects
    means a method answers with a typical size more than with what the image shows.
    """
    by_method = {m: [r for r in _select(rows, mode) if r["method"] == m and r["size_ref"] > 0] for m in methods}
    out = []
    for lo, hi in zip(SIZE_BINS_MM[:-1], SIZE_BINS_MM[1:], strict=True):
        entry: dict = {"lo": lo, "hi": hi, "n": 0}
        for m, sel in by_method.items():
            inside = [r for r in sel if lo <= math.sqrt(r["size_ref"] / math.pi) < hi]
            if inside:
                entry["n"] = len(inside)
                entry[m] = {
                    "dice": float(np.mean([r["dice"] for r in inside])),
                    "area_ratio": float(np.median([r["size_pred"] / r["size_ref"] for r in inside])),
                }
        if entry["n"]:
            out.append(entry)
    return out


def markdown_size_table(breakdown: list[dict], methods: Sequence[str]) -> str:
    """Rows of size bins; per method the mean Dice and the median predicted/reference area."""
    head = ["object radius (mm)", "n"] + [f"{m} {h}" for m in methods for h in ("Dice", "area ratio")]
    rows = []
    for e in breakdown:
        span = f"≥ {e['lo']:g}" if math.isinf(e["hi"]) else f"{e['lo']:g}–{e['hi']:g}"
        cells = [span, e["n"]]
        for m in methods:
            cells += [f"{e[m]['dice']:.3f}", f"{e[m]['area_ratio']:.2f}"] if m in e else ["", ""]
        rows.append(cells)
    return _table(head, rows)


def _paired(diffs: np.ndarray, seed: int) -> dict:
    """Mean, bootstrap 95 % CI, wins/ties/losses and Wilcoxon p of per-slice Dice differences."""
    mean = float(diffs.mean())
    if np.ptp(diffs) == 0:  # all equal: resampling has nothing to vary
        lo = hi = mean
    else:
        ci = stats.bootstrap(
            (diffs,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile", rng=seed
        ).confidence_interval
        lo, hi = float(ci.low), float(ci.high)
    p = float(stats.wilcoxon(diffs).pvalue) if np.any(diffs != 0) else 1.0
    return {
        "n": int(diffs.size),
        "mean": mean,
        "ci95": [lo, hi],
        "wins": int((diffs > 0).sum()),
        "ties": int((diffs == 0).sum()),
        "losses": int((diffs < 0).sum()),
        "wilcoxon_p": p,
    }


def paired_comparison(rows: list[dict], methods: Sequence[str], mode: str = "centroid", seed: int = 0) -> list[dict]:
    """The first method against each other one, slice by slice: is the Dice difference real?

    Both methods are clicked at the same points, so the comparison is paired: per slice, the Dice of
    ``methods[0]`` minus that of the other (over the slice's clicks of each kind, averaged). Returns
    one entry per other method and click kind (``"centre"``; in jitter mode also ``"jitter"``):
    ``{"a", "b", "clicks", "n", "mean", "ci95": [lo, hi], "wins", "ties", "losses", "wilcoxon_p"}``,
    where ``wins`` counts slices on which ``a`` is ahead. ``ci95`` is a percentile bootstrap over
    slices (9,999 resamples, seeded); ``wilcoxon_p`` the two-sided signed-rank test. Both treat
    slices as independent: true for synthetic slices, optimistic for neighbouring slices of one
    volume, whose errors are alike.
    """
    if len(methods) < 2:
        return []
    kinds = ["centre"] + (["jitter"] if mode == "jitter" else [])
    out = []
    for kind in kinds:
        per: dict[str, dict[tuple, list[float]]] = {m: {} for m in methods}
        for r in rows:
            if r["click_kind"] == kind and r["method"] in per:
                per[r["method"]].setdefault((r["case"], r["z"]), []).append(r["dice"])
        a = methods[0]
        for b in methods[1:]:
            keys = sorted(set(per[a]) & set(per[b]), key=str)
            if not keys:
                continue
            diffs = np.array([np.mean(per[a][k]) - np.mean(per[b][k]) for k in keys], dtype=np.float64)
            out.append({"a": a, "b": b, "clicks": kind, **_paired(diffs, seed)})
    return out


def markdown_paired(paired: list[dict]) -> str:
    """One line per comparison: mean Dice difference, its 95 % CI, slices won and the Wilcoxon p."""
    lines = []
    for e in paired:
        lo, hi = e["ci95"]
        lines.append(
            f"- {e['a']} − {e['b']} ({e['clicks']} clicks, {e['n']} slices): Dice {e['mean']:+.3f} "
            f"(95 % CI {lo:+.3f} to {hi:+.3f}); {e['a']} ahead on {e['wins']}, behind on {e['losses']}, "
            f"level on {e['ties']}; Wilcoxon p = {e['wilcoxon_p']:.3g}"
        )
    return "\n".join(lines)


def _fmt(stat: dict[str, float], digits: int) -> str:
    if not math.isfinite(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def markdown_table(summary: dict) -> str:
    """One row per method: mean ± sd of each metric, n clicks and slices (and Dice lost in jitter mode)."""
    jitter = any("dice_lost" in e for e in summary.values())
    head = ["method", *METRICS.values(), "n", "slices", "coarser"] + (["Dice (centre)", "Dice lost"] if jitter else [])
    rows = []
    for method, e in summary.items():
        cells = [method] + [_fmt(e[k], 3 if k == "dice" else 2) for k in METRICS]
        cells += [e["n"], e["slices"], e.get("coarsened", 0)]
        if jitter:
            cells += [_fmt(e["dice_centre"], 3), _fmt(e["dice_lost"], 3)]
        rows.append(cells)
    return _table(head, rows)
