"""Slice-wise evaluation of the segmentation methods against reference labels.

Two sources of cases:

* a real volume with its label (:func:`evaluate_volume`): every slice z that holds the label is
  clicked, at the label's mass centre on that slice (the nearest label pixel when the centre falls
  outside it), through the same :class:`~seqpatch_core.inference.predictor.Predictor` path the app uses;
* held-out synthetic slices (:func:`evaluate_synthetic`): :func:`synthetic_set`, an equal share of
  the slices in each radius range of :data:`SYNTH_RADII_MM` (3 to 80 mm), half at 1.0 mm with preset
  ``ct``, half at 0.625 mm with ``promise12`` (the background bank's ``"val"`` split), each slice
  starting the pyramid of grids on its own grid, as a click in the app (:func:`segment_slice`).

Click modes (:func:`parse_clicks`): ``centroid`` (one click per slice at the centre above),
``jitter:N`` (N clicks per slice moved from the centre by a uniform distance of up to 20 % of the
slice object's equivalent radius ``sqrt(area / pi)``, in a uniform direction, staying inside the
object: :func:`seqpatch_core.data.synth.jitter_click`) or ``inner:N`` (N clicks anywhere in the
object's inner half, spread evenly over its area: half way from the centre to the boundary along a
uniform direction at most, :func:`seqpatch_core.data.synth.inner_click`; where a user may click on a
large object). Moved clicks are seeded by ``SeedSequence([seed, 13])``, apart from the synthetic
slices' own stream. With moved clicks the centre click is evaluated as well, so the summary reports
the Dice lost by moving the click ("dice_lost" = mean centre Dice - mean moved-click Dice, per slice
then averaged).

Metrics are :func:`seqpatch_core.base.metrics.evaluate_masks` on 2D slices with the slice's in-plane
spacing (y, x) in mm: Dice, CD-x/y/z (cd_z is 0 on 2D slices), HD95, ABD (mm) and aRVD.

A further scorer of the synthetic and atlas slices may run beside the click models on the same
slices (``extra``, :class:`SliceScorer`: LiteMedSAM's boxes,
:class:`seqpatch_core.evaluation.boxes.SliceBoxes`); its rows join the click models' in every table.

Each click gives one :class:`Row`. Beside the per-method summary, results are split by object size
(:func:`size_breakdown`: mean Dice with its bootstrap interval per method and the paired difference,
per radius bin up to >= 60 mm) and the first method is compared with each other one slice by slice
(:func:`paired_comparison`: mean Dice difference, bootstrap CI, Wilcoxon signed-rank test), so a
difference can be told from noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
from seqpatch_core.inference.predictor import Predictor, Result, segment_slice
from seqpatch_core.method import rays
from seqpatch_core.training.batches import SLICE_SIZE, load_bank

log = logging.getLogger(__name__)

__all__ = [
    "JITTER_FRAC",
    "METRICS",
    "SIZE_BINS_MM",
    "SYNTH_RADII_MM",
    "Row",
    "SliceScorer",
    "evaluate_atlas",
    "evaluate_synthetic",
    "evaluate_volume",
    "labelled_slices",
    "markdown_size_table",
    "markdown_paired",
    "markdown_table",
    "paired_comparison",
    "parse_clicks",
    "size_breakdown",
    "slice_clicks",
    "summarize",
    "synthetic_set",
]

#: Largest click displacement of ``jitter:N``, as a fraction of the object's equivalent radius.
JITTER_FRAC = 0.2
#: How far ``inner:N`` clicks go from the centre towards the boundary, as a fraction of the way.
INNER_FRAC = 0.5
#: The click modes that move clicks away from the centre (``MODE:N``).
MOVED_CLICKS = ("jitter", "inner")
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
SIZE_BINS_MM: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0, 60.0, math.inf)
#: Nominal radius ranges (mm) of the synthetic benchmark, one equal share of the slices each: every
#: size bin gets enough slices for an interval (the generator's own rule puts few above 25 mm).
SYNTH_RADII_MM: tuple[tuple[float, float], ...] = ((3, 5), (5, 10), (10, 20), (20, 40), (40, 60), (60, 80))
#: The two halves of the synthetic benchmark: (ray preset, pixel size in mm), the CT and the MR grid.
SYNTH_HALVES: tuple[tuple[str, float], ...] = (("ct", 1.0), ("promise12", 0.625))
#: A target's nominal radius is at most this fraction of its slice's side (the generator's limit is
#: a little larger), which sets the side of the slices of the large ranges.
_FIT = 0.2


@dataclass
class Row:
    """One click's answer scored against the reference slice.

    case: the volume's source or the synthetic slice's index; z: the slice; click: (y, x) slice px;
    click_kind: "centre", or the moved clicks' mode ("jitter", "inner"); grid_mm: the working grid of
    the answer (the pyramid's, :class:`~seqpatch_core.method.run.Coarsen`), coarsened: whether it is
    coarser than the click's first grid. The metrics are
    :func:`~seqpatch_core.base.metrics.evaluate_masks` on the slice grid (distances in mm, sizes in
    mm^2). preset, spacing_mm (pixel size) and kind: synthetic and atlas
    slices only. box: the box mode of a box-prompted method's row ("label+0", "from-seqpatch+5";
    :mod:`seqpatch_core.evaluation.boxes`), None for a click's.
    """

    method: str
    case: str | int
    z: int
    click: tuple[float, float]
    click_kind: str
    grid_mm: float
    coarsened: bool
    dice: float
    cd_x: float
    cd_y: float
    cd_z: float
    hd95: float
    abd: float
    arvd: float
    size_pred: float
    size_ref: float
    preset: str | None = None
    spacing_mm: float | None = None
    kind: str | None = None
    box: str | None = None

    @property
    def radius_mm(self) -> float:
        """The reference's equivalent radius sqrt(area / pi) on the slice, mm."""
        return math.sqrt(self.size_ref / math.pi)


class SliceScorer(Protocol):
    """A method scored on the synthetic or atlas slices beside the click models, on the same slices.

    ``method``: its name in the rows. Called once per slice with (the slice's index, the slice, its
    ray preset, the click models' results on it: name -> one Result per click, the centre click
    ``s.click`` first); returns the slice's rows (case = the index).
    """

    method: str

    def __call__(self, index: int, s: synth.SynthSlice, preset: str, results: dict[str, list[Result]]) -> list[Row]:
        """The rows of slice ``index``."""


def parse_clicks(spec: str) -> tuple[str, int]:
    """``"centroid"`` -> ("centroid", 1); ``"jitter:N"`` / ``"inner:N"`` (N >= 1) -> ("jitter", N) /
    ("inner", N); else InputError."""
    text = str(spec).strip().lower()
    if text == "centroid":
        return "centroid", 1
    mode, _, count = text.partition(":")
    if mode in MOVED_CLICKS:
        try:
            n = int(count)
        except ValueError:
            n = 0
        if n >= 1:
            return mode, n
    raise InputError(f"unknown click mode {spec!r}; use centroid, jitter:N or inner:N (N >= 1)")


def _clicks_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 13]))


def synthetic_set(n: int, seed: int, backgrounds: str | None) -> list[tuple[synth.SynthSlice, str]]:
    """``n`` held-out synthetic slices stratified by size: (slice, ray preset).

    The slices are split evenly over the radius ranges of :data:`SYNTH_RADII_MM` (in that order, the
    remainder to the first ranges) and, within each, over the halves of :data:`SYNTH_HALVES` (1.0 mm
    with ``ct``, 0.625 mm with ``promise12``); each stratum is ``synth.benchmark_set`` with its own
    seed stream and the bank's ``"val"`` split, on slices of at least ``SLICE_SIZE`` px whose side
    holds its largest radius. Use validation seeds for choices, the benchmark's for figures.
    """
    bank = load_bank(backgrounds, "val")
    strata = [(i, r, h) for i, r in enumerate(SYNTH_RADII_MM) for h in SYNTH_HALVES]
    out = []
    for j, (i, (lo, hi), (preset, spacing)) in enumerate(strata):
        k = n // len(strata) + (j < n % len(strata))
        if k:
            size = max(SLICE_SIZE, 16 * math.ceil(hi / spacing / _FIT / 16))
            stream = seed * 1000 + 10 * i + (spacing < 1.0)  # a stream per stratum, apart from the others
            slices = synth.benchmark_set(k, stream, bank, spacing_mm=spacing, size=size, radius_mm=(lo, hi))
            out += [(s, preset) for s in slices]
    return out


def slice_clicks(
    label: np.ndarray, mode: str, n: int, rng: np.random.Generator, centre: tuple[float, float] | None = None
) -> list[tuple[float, float]]:
    """Clicks (y, x) in slice px on a 2D label (H, W) for one click mode.

    The first click is always the object's centre (``centre`` or :func:`mask_click`); ``jitter`` and
    ``inner`` append ``n`` moved clicks (see the module docstring).
    """
    c = centre if centre is not None else mask_click(label)
    clicks = [(float(c[0]), float(c[1]))]
    if mode == "jitter":
        clicks += [synth.jitter_click(c, label, rng, max_frac=JITTER_FRAC) for _ in range(n)]
    elif mode == "inner":
        clicks += [synth.inner_click(c, label, rng, frac=INNER_FRAC) for _ in range(n)]
    return clicks


def _rows_for_slice(
    results: dict[str, list[Result]],
    ref: np.ndarray,
    clicks: Sequence[tuple[float, float]],
    spacing_yx: tuple[float, float],
    case: str | int,
    z: int,
    mode: str,
    **extra,
) -> list[Row]:
    """One :class:`Row` per (method, click) of one reference slice (H, W); ``results``: per method,
    one answer per click of :func:`slice_clicks` in ``mode`` (the centre first); ``extra``: the
    synthetic slice's preset, spacing_mm and kind."""
    rows = []
    for method, answers in results.items():
        for i, (r, click) in enumerate(zip(answers, clicks, strict=True)):
            rows.append(
                Row(
                    method=method,
                    case=case,
                    z=z,
                    click=(round(float(click[0]), 3), round(float(click[1]), 3)),
                    click_kind="centre" if i == 0 else mode,
                    grid_mm=float(r.working_spacing),
                    coarsened=r.coarsened,
                    **evaluate_masks(r.mask, ref, spacing_yx),
                    **extra,
                )
            )
    return rows


def _select(rows: list[Row], mode: str) -> list[Row]:
    """The rows the summary is about: centre clicks (centroid mode) or the mode's moved ones."""
    kind = "centre" if mode == "centroid" else mode
    return [r for r in rows if r.click_kind == kind]


def labelled_slices(label: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    """The (z, y, x) bool object mask of ``label`` (non-zero) and the slices z that hold it, checked
    against the image's ``shape``: one line for a label of another shape or an empty one."""
    lab = np.asarray(label) != 0
    if lab.shape != tuple(shape):
        raise InputError(f"label shape {lab.shape} differs from the image's {tuple(shape)} (z, y, x)")
    zs = [int(z) for z in np.flatnonzero(lab.reshape(lab.shape[0], -1).any(axis=1))]
    if not zs:
        raise InputError("the label is empty: nothing to evaluate")
    return lab, zs


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
    one :meth:`Predictor.predict_many` batch per method (the predictor's scale rule applies). Returns
    ``{"clicks", "seed", "spacing_zyx", "slices": [z...], "rows": [Row...], "summary": {method: ...},
    "by_size": [...], "paired": [...]}`` (see :func:`summarize`, :func:`size_breakdown` and
    :func:`paired_comparison`).
    """
    mode, n = parse_clicks(clicks)
    vol = predictor.volume
    if vol is None:
        raise InputError("no volume loaded: load an image first")
    lab, zs = labelled_slices(label, vol.shape)
    spacing_yx = (float(vol.spacing[1]), float(vol.spacing[2]))
    rng = _clicks_rng(seed)
    rows: list[Row] = []
    for i, z in enumerate(zs):
        if progress is not None:
            progress(i / len(zs), f"slice {z}")
        pts = slice_clicks(lab[z], mode, n, rng)
        res = {m: predictor.predict_many(z, pts, m, preset=preset, threshold=threshold) for m in methods}
        rows += _rows_for_slice(res, lab[z], pts, spacing_yx, vol.source, z, mode)
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


def _segment_slices(
    models: dict[str, nn.Module],
    val: Sequence[tuple[synth.SynthSlice, str]],
    device: torch.device,
    mode: str,
    k: int,
    rng: np.random.Generator,
    threshold: float,
    working_spacing: float | None,
    coarsen: bool,
    progress: Progress | None,
    extra: SliceScorer | None = None,
) -> list[Row]:
    """Rows of every model on windowed slices (slice, preset), each clicked by :func:`slice_clicks`
    and segmented by :func:`segment_slice` from ``working_spacing`` (None: the slice's own grid),
    then ``extra``'s rows of the slice, given those answers."""
    rows: list[Row] = []
    for i, (s, preset) in enumerate(val):
        if progress is not None:
            progress(i / len(val), f"synthetic slice {i}")
        pts = slice_clicks(s.label, mode, k, rng, centre=s.click)
        cfg, clicks = rays.get_preset(preset), np.array(pts)
        res = {
            m: segment_slice(net, s.image, clicks, cfg, s.spacing_mm, device, threshold, None, working_spacing, coarsen)
            for m, net in models.items()
        }
        px = (s.spacing_mm, s.spacing_mm)
        rows += _rows_for_slice(res, s.label, pts, px, i, 0, mode, preset=preset, spacing_mm=s.spacing_mm, kind=s.kind)
        if extra is not None:
            rows += extra(i, s, preset, res)
    if progress is not None:
        progress(1.0, "done")
    return rows


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
    extra: SliceScorer | None = None,
    methods: Sequence[str] | None = None,
) -> dict:
    """Evaluate ``models`` (name -> network) on the ``n`` held-out slices of :func:`synthetic_set`.

    Each slice is a windowed image on its own grid and starts the pyramid there (``working_spacing``,
    mm: on that grid instead, the slice resampled, scored against the label on its own grid); with
    ``coarsen`` each model's :class:`~seqpatch_core.method.run.Coarsen` rule climbs the pyramid, as in
    the app (False: the first grid only). ``extra`` scores each slice too, given the models' answers
    (:class:`SliceScorer`). ``methods``: the methods reported, in order (the first is the paired
    comparison's reference); default the models', then ``extra``'s; a model left out only feeds
    ``extra``. Returns the same structure as :func:`evaluate_volume` (``case`` is the slice index),
    plus ``"by_preset"``: ``{preset: {"summary", "by_size"}}``.
    """
    if n < 1:
        raise InputError(f"--synthetic needs at least 1 slice, got {n}")
    if working_spacing is not None and not 0.2 <= working_spacing <= 10.0:
        raise InputError(f"--working-spacing must be between 0.2 and 10 mm, got {working_spacing}")
    mode, k = parse_clicks(clicks)
    names = _reported(models, extra, methods)
    val = synthetic_set(n, seed, backgrounds)
    rows = _segment_slices(models, val, device, mode, k, _clicks_rng(seed), threshold, working_spacing, coarsen,
                           progress, extra)  # fmt: skip
    rows = [r for r in rows if r.method in names]
    # the two halves differ in working spacing and ray preset: each gets its own summary
    by_preset: dict[str, dict] = {}
    for preset in dict.fromkeys(r.preset for r in rows):
        half = [r for r in rows if r.preset == preset]
        by_preset[preset] = {"summary": summarize(half, names, mode), "by_size": size_breakdown(half, names, mode)}
    grids = f"first grid {working_spacing} mm" if working_spacing else "first grid the slice's"
    return {
        "source": f"synthetic (n={n}, seed={seed}, backgrounds={backgrounds or 'phantoms'}, {grids}, "
        + ("pyramid)" if coarsen else "no pyramid)"),
        "clicks": clicks,
        "seed": seed,
        "slices": list(range(len(val))),
        "rows": rows,
        "summary": summarize(rows, names, mode),
        "by_size": size_breakdown(rows, names, mode),
        "paired": paired_comparison(rows, names, mode),
        "by_preset": by_preset,
    }


def _reported(models: dict, extra: SliceScorer | None, methods: Sequence[str] | None) -> list[str]:
    """The methods an evaluation reports, in order: ``methods``, or the models' then ``extra``'s."""
    known = [*models, *([extra.method] if extra is not None else [])]
    if methods is None:
        return known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise InputError(f"no model or scorer for {', '.join(unknown)}")
    return list(methods)


def evaluate_atlas(
    models: dict,
    n: int,
    seed: int,
    bank_path: str | Path,
    device,
    clicks: str = "centroid",
    threshold: float = 0.5,
    coarsen: bool = True,
    extra: SliceScorer | None = None,
    methods: Sequence[str] | None = None,
) -> dict:
    """Evaluate ``models`` on ``n`` held-out (right-hemisphere) atlas objects drawn with
    ``SeedSequence([seed, 17])`` at the MR working spacing with preset ``promise12``; ``extra`` and
    ``methods`` and the result's structure as in :func:`evaluate_synthetic`."""
    if n < 1:
        raise InputError(f"--atlas needs at least 1 object, got {n}")
    mode, k = parse_clicks(clicks)
    names = _reported(models, extra, methods)
    bank = AtlasBank(bank_path)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    val = [(bank.sample(rng, SLICE_SIZE, "val"), "promise12") for _ in range(n)]
    rows = _segment_slices(models, val, device, mode, k, _clicks_rng(seed), threshold, None, coarsen, None, extra)
    rows = [r for r in rows if r.method in names]
    return {
        "source": f"atlas val (n={n}, seed={seed}, sources={','.join(bank.ids())})",
        "clicks": clicks,
        "seed": seed,
        "slices": list(range(n)),
        "rows": rows,
        "summary": summarize(rows, names, mode),
        "by_size": size_breakdown(rows, names, mode),
        "paired": paired_comparison(rows, names, mode),
    }


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def summarize(rows: list[Row], methods: Sequence[str], mode: str = "centroid") -> dict:
    """Per method: ``{metric: {"mean", "sd"}}`` over the mode's rows, ``"n"`` (rows), ``"slices"`` and
    ``"coarsened"`` (rows answered on a coarser grid of the pyramid than their first).

    The sd is the sample standard deviation (0 for one row). With moved clicks (jitter, inner) also
    ``"dice_centre"`` (mean Dice of the centre clicks) and ``"dice_lost"``: the mean over slices of
    (centre Dice - mean moved-click Dice).
    """
    out: dict[str, dict] = {}
    for method in methods:
        mine = [r for r in rows if r.method == method]
        sel = _select(mine, mode)
        if not sel:
            continue
        entry: dict = {k: _mean_sd([getattr(r, k) for r in sel]) for k in METRICS}
        entry["n"] = len(sel)
        entry["slices"] = len({(r.case, r.z) for r in sel})
        entry["coarsened"] = sum(r.coarsened for r in sel)
        if mode in MOVED_CLICKS:
            centre = {(r.case, r.z): r.dice for r in mine if r.click_kind == "centre"}
            lost: dict[tuple, list[float]] = {}
            for r in sel:
                lost.setdefault((r.case, r.z), []).append(centre[(r.case, r.z)] - r.dice)
            entry["dice_centre"] = _mean_sd(list(centre.values()))
            entry["dice_lost"] = _mean_sd([float(np.mean(v)) for v in lost.values()])
        out[method] = entry
    return out


def _mean_ci(values: Sequence[float], seed: int = 0) -> list[float]:
    """Percentile bootstrap 95 % interval of the mean (9,999 resamples, seeded), as :func:`_paired`."""
    a = np.asarray(values, dtype=np.float64)
    if a.size < 2 or np.ptp(a) == 0:
        return [float(a.mean()), float(a.mean())]
    ci = stats.bootstrap((a,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile", rng=seed)
    return [float(ci.confidence_interval.low), float(ci.confidence_interval.high)]


def size_breakdown(rows: list[Row], methods: Sequence[str], mode: str = "centroid", seed: int = 0) -> list[dict]:
    """Dice and area bias by object size: one entry per non-empty bin of :data:`SIZE_BINS_MM`.

    The size is the reference's equivalent radius ``sqrt(area / pi)`` (mm) on the clicked slice.
    Each entry: ``{"lo", "hi", "n", method: {"dice": mean, "ci95": [lo, hi] (bootstrap over the bin's
    rows), "area_ratio": median predicted / reference area, "coarsened": rows answered on a coarser
    grid, "grid_mm": median grid}, "paired": [...]}``, where ``paired`` is :func:`paired_comparison`
    of the bin's rows (the first method against each other one). An area ratio far from 1 in opposite
    directions for small and large objects means a method answers with a typical size more than with
    what the image shows.
    """
    sel = [r for r in _select(rows, mode) if r.method in methods and r.size_ref > 0]
    out = []
    for lo, hi in zip(SIZE_BINS_MM[:-1], SIZE_BINS_MM[1:], strict=True):
        inside = [r for r in sel if lo <= r.radius_mm < hi]
        if not inside:
            continue
        entry: dict = {"lo": lo, "hi": hi, "n": 0}
        for m in methods:
            mine = [r for r in inside if r.method == m]
            if mine:
                entry["n"] = len(mine)
                entry[m] = {
                    "dice": float(np.mean([r.dice for r in mine])),
                    "ci95": _mean_ci([r.dice for r in mine], seed),
                    "area_ratio": float(np.median([r.size_pred / r.size_ref for r in mine])),
                    "coarsened": sum(r.coarsened for r in mine),
                    "grid_mm": float(np.median([r.grid_mm for r in mine])),
                }
        entry["paired"] = paired_comparison(inside, methods, mode, seed)
        out.append(entry)
    return out


def markdown_size_table(breakdown: list[dict], methods: Sequence[str]) -> str:
    """Rows of size bins; per method the mean Dice with its 95 % interval, the median predicted /
    reference area and the median grid; then the paired difference of the first method and the next."""
    head = ["object radius (mm)", "n"] + [f"{m} {h}" for m in methods for h in ("Dice", "area ratio", "grid mm")]
    pair = len(methods) > 1
    if pair:
        head.append(f"{methods[0]} − {methods[1]}")
    rows = []
    for e in breakdown:
        span = f"≥ {e['lo']:g}" if math.isinf(e["hi"]) else f"{e['lo']:g}–{e['hi']:g}"
        cells = [span, e["n"]]
        for m in methods:
            if m in e:
                (lo, hi), b = e[m]["ci95"], e[m]
                cells += [f"{b['dice']:.3f} ({lo:.3f}–{hi:.3f})", f"{b['area_ratio']:.2f}", f"{b['grid_mm']:g}"]
            else:
                cells += ["", "", ""]
        if pair:
            d = next((p for p in e["paired"] if p["b"] == methods[1]), None)
            cells.append("" if d is None else f"{d['mean']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})")
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


def paired_comparison(rows: list[Row], methods: Sequence[str], mode: str = "centroid", seed: int = 0) -> list[dict]:
    """The first method against each other one, slice by slice: is the Dice difference real?

    Both methods are clicked at the same points, so the comparison is paired: per slice, the Dice of
    ``methods[0]`` minus that of the other (over the slice's clicks of each kind, averaged). Returns
    one entry per other method and click kind (``"centre"``; with moved clicks also the mode's):
    ``{"a", "b", "clicks", "n", "mean", "ci95": [lo, hi], "wins", "ties", "losses", "wilcoxon_p"}``,
    where ``wins`` counts slices on which ``a`` is ahead. ``ci95`` is a percentile bootstrap over
    slices (9,999 resamples, seeded); ``wilcoxon_p`` the two-sided signed-rank test. Both treat
    slices as independent: true for synthetic slices, optimistic for neighbouring slices of one
    volume, whose errors are alike.
    """
    if len(methods) < 2:
        return []
    kinds = ["centre"] + ([mode] if mode in MOVED_CLICKS else [])
    out = []
    for kind in kinds:
        per: dict[str, dict[tuple, list[float]]] = {m: {} for m in methods}
        for r in rows:
            if r.click_kind == kind and r.method in per:
                per[r.method].setdefault((r.case, r.z), []).append(r.dice)
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
    """One row per method: mean ± sd of each metric, n clicks and slices (and Dice lost with moved clicks)."""
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
