"""Click robustness: how much a segmentation changes when the click moves.

A ``grid × grid`` set of click offsets around a point on one slice, ``offsets_mm = (arange(grid) -
grid // 2) * step_mm`` along y and along x (converted to pixels with the slice's in-plane spacing),
is segmented by each method in ONE :meth:`Predictor.predict_many` batch (or in batches of ``chunk``
clicks, so that a progress bar can advance; the results are the same). Each result is scored by
Dice against the label slice when one is given (reference ``"label"``), else against the method's
own result at the original click (reference ``"self"``; offset (0, 0) is always in the grid, since
``grid // 2`` is one of ``arange(grid)``).

The result is a :class:`RobustnessMap`: grids are lists of rows, row i = y offset ``offsets_mm[i]``,
column j = x offset ``offsets_mm[j]``; +y is down the image, +x to the right. Dice is None where the
moved click falls outside the image (skipped). ``outside`` marks clicks that fall outside the object:
outside the label slice (reference "label"), or, for reference "self", outside the original mask of
at least one method (with one method: exactly its own object). ``grids_mm`` gives the working grid
each click was answered on (the scale rule's pyramid, :class:`~seqpatch_core.method.run.Coarsen`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.base.progress import Progress
from seqpatch_core.base.tables import markdown_table
from seqpatch_core.images.intensity import Window
from seqpatch_core.inference.predictor import Predictor

log = logging.getLogger(__name__)

__all__ = ["RobustnessMap", "click_robustness", "robustness_figure", "robustness_table"]


@dataclass
class RobustnessMap:
    """Dice of every method over a grid of click offsets on one slice (see the module docstring).

    offsets_mm: (G,) offsets along y and along x; dice and grids_mm: method -> G x G rows (None where
    the click fell outside the image); outside: G x G bool; reference: "label" or "self"; point_yx:
    the original click (y, x) in slice px; slice: z; window: the held window's name; seconds: per
    method and "total".
    """

    offsets_mm: list[float]
    dice: dict[str, list[list[float | None]]]
    grids_mm: dict[str, list[list[float | None]]]
    outside: list[list[bool]]
    reference: str
    point_yx: tuple[float, float]
    slice: int
    window: str
    seconds: dict[str, float]

    @property
    def methods(self) -> list[str]:
        """The methods measured, in their order."""
        return list(self.dice)

    def mean(self, method: str) -> float:
        """Mean Dice of ``method`` over the clicks inside the image."""
        return float(np.mean([v for row in self.dice[method] for v in row if v is not None]))


def _inside(mask: np.ndarray, y: float, x: float) -> bool:
    """Whether the click (y, x) (slice px) lands on a foreground pixel of the (H, W) mask."""
    return bool(mask[int(round(y)), int(round(x))])


def click_robustness(
    predictor: Predictor,
    z: int,
    point_yx: Sequence[float],
    grid: int = 5,
    step_mm: float = 3.0,
    methods: Sequence[str] = ("seqpatch", "unet"),
    label_slice: np.ndarray | None = None,
    progress: Progress | None = None,
    preset: str | None = None,
    threshold: float = 0.5,
    chunk: int | None = None,
    window: str | Window | None = None,
    coarsen: bool | None = None,
) -> RobustnessMap:
    """Dice of every method over a grid of click offsets on slice ``z`` (see the module docstring).

    point_yx: the original click (y, x) in slice px; label_slice: optional (H, W) reference, non-zero
    = object; progress: optional ``callable(fraction, text)``, called before each batch and at the end;
    chunk: clicks per batch (None or 0: each method's whole grid in one batch, the fastest; a small
    chunk lets ``progress`` advance while a method runs, with the same results); window: None for the
    predictor's setting; resolved once at the original click and held for every moved click and every
    method, so the map measures the networks, not a window rule that may switch between nearby clicks;
    coarsen: the second pass (None: the predictor's setting). Raises InputError for
    a point outside the volume, ``grid`` < 1, ``step_mm`` <= 0 or ``chunk`` < 0.
    """
    if int(grid) < 1 or not step_mm > 0:
        raise InputError(f"the grid needs grid >= 1 and step > 0 mm, got grid={grid}, step={step_mm}")
    if not methods:
        raise InputError("no method to evaluate")
    if chunk is not None and int(chunk) < 0:
        raise InputError(f"the chunk (clicks per batch) must be >= 0, got {chunk}")
    t_start = time.perf_counter()
    z, y0, x0 = predictor.check_point((z, *point_yx))
    vol = predictor.volume
    held = predictor.resolve_window((z, y0, x0), window)
    h, w = vol.shape[1:]
    if label_slice is not None:
        label_slice = np.asarray(label_slice) != 0
        if label_slice.shape != (h, w):
            raise InputError(f"label slice shape {label_slice.shape} differs from the image's ({h}, {w})")
    grid = int(grid)
    offsets_mm = (np.arange(grid) - grid // 2) * float(step_mm)
    ys = y0 + offsets_mm / vol.spacing[1]
    xs = x0 + offsets_mm / vol.spacing[2]
    cells = [(i, j) for i in range(grid) for j in range(grid) if 0 <= ys[i] <= h - 1 and 0 <= xs[j] <= w - 1]
    centre = cells.index((grid // 2, grid // 2))  # the original click, inside by check_point
    points = [(float(ys[i]), float(xs[j])) for i, j in cells]

    dices: dict[str, list[list[float | None]]] = {}
    grids: dict[str, list[list[float | None]]] = {}
    seconds: dict[str, float] = {}
    outside = np.zeros((grid, grid), dtype=bool)
    n = len(points)
    step = int(chunk) if chunk and int(chunk) < n else n
    for mi, method in enumerate(methods):
        t0 = time.perf_counter()
        answers = []
        for start in range(0, n, step):
            if progress is not None:
                done = f"{start} of {n} clicks done" if start else f"{n} clicks"
                progress((mi + start / n) / len(methods), f"{method}: {done}")
            answers += predictor.predict_many(
                z, points[start : start + step], method, preset=preset, threshold=threshold, coarsen=coarsen,
                window=held,
            )
        ref = label_slice if label_slice is not None else answers[centre].mask
        dices[method] = [[None] * grid for _ in range(grid)]
        grids[method] = [[None] * grid for _ in range(grid)]
        for (i, j), (y, x), r in zip(cells, points, answers, strict=True):
            dices[method][i][j] = dice(r.mask, ref)
            grids[method][i][j] = float(r.working_spacing)
            outside[i, j] |= not _inside(ref, y, x)
        seconds[method] = round(time.perf_counter() - t0, 3)
        log.info("%s: %d clicks in %.2f s", method, n, seconds[method])
    seconds["total"] = round(time.perf_counter() - t_start, 3)
    if progress is not None:
        progress(1.0, "done")
    return RobustnessMap(
        offsets_mm=[float(o) for o in offsets_mm],
        dice=dices,
        grids_mm=grids,
        outside=outside.tolist(),
        reference="label" if label_slice is not None else "self",
        point_yx=(float(y0), float(x0)),
        slice=int(z),
        window=str(held),
        seconds=seconds,
    )


def robustness_table(result: RobustnessMap) -> str:
    """Markdown: one Dice grid per method (rows y offsets, columns x offsets, mm), × = click outside;
    the working grids the clicks were answered on follow the mean."""
    offs = result.offsets_mm
    y, x = result.point_yx
    out = [
        f"slice {result.slice}, click (y, x) = ({y:.1f}, {x:.1f}), reference: {result.reference}; "
        "rows: y offset, columns: x offset (mm); × = click outside the object"
    ]
    for method in result.methods:
        used = sorted({g for row in result.grids_mm[method] for g in row if g is not None})
        where = ", ".join(f"{g:g}" for g in used)
        out += ["", f"**{method}** (mean Dice {result.mean(method):.3f}, min {_worst(result, method):.3f}, "
                f"grids {where} mm, {result.seconds[method]:.2f} s)", ""]  # fmt: skip
        rows = []
        for i, row in enumerate(result.dice[method]):
            out_i = result.outside[i]
            cells = ["n/a" if v is None else f"{v:.3f}" + (" ×" if out_i[j] else "") for j, v in enumerate(row)]
            rows.append([f"{offs[i]:+g}", *cells])
        out.append(markdown_table(["y \\ x", *(f"{o:+g}" for o in offs)], rows))
    return "\n".join(out)


def _worst(result: RobustnessMap, method: str) -> float:
    """The lowest Dice of ``method`` over the clicks inside the image."""
    return float(min(v for row in result.dice[method] for v in row if v is not None))


def robustness_figure(result: RobustnessMap, names: dict[str, str] | None = None, to_display=None):
    """Dice heat maps side by side, one per method (a matplotlib Figure, no pyplot state).

    viridis on 0..1, each cell annotated with its Dice; clicks outside the object are hatched and
    marked ×; skipped cells (click outside the image) are grey "n/a"; the original click's cell is
    outlined in red. ``names``: display names of the methods (default: their own). ``to_display``:
    how the slice is turned on screen (``PlaneDisplay.to_display`` of
    :mod:`seqpatch_core.images.orientation`); the (y, x) voxel-order grid is turned the same way, so
    its axes are offsets in mm as on the screen (right, down). Without it they run along the array's
    columns and rows.
    """
    from matplotlib.figure import Figure

    methods = result.methods
    offs = np.asarray(result.offsets_mm, dtype=float)
    outside = np.asarray(result.outside, dtype=bool)
    if to_display is not None:
        outside = np.asarray(to_display(outside))
    n = len(offs)
    step = float(offs[1] - offs[0]) if n > 1 else 1.0
    extent = (offs[0] - step / 2, offs[-1] + step / 2, offs[-1] + step / 2, offs[0] - step / 2)
    fig = Figure(figsize=(4.2 * len(methods) + 0.8, 4.2), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    image = None
    for ax, method in zip(axes, methods, strict=True):
        grid = np.array([[np.nan if v is None else v for v in row] for row in result.dice[method]], dtype=float)
        if to_display is not None:  # the offsets are symmetric with one step, so only the cells move
            grid = np.asarray(to_display(grid))
        image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
        ax.set_facecolor("0.8")  # skipped cells (NaN) show the background
        for i in range(n):
            for j in range(n):
                v = grid[i, j]
                if np.isnan(v):
                    ax.text(offs[j], offs[i], "n/a", ha="center", va="center", fontsize=8, color="0.3")
                    continue
                if outside[i, j]:
                    hatch = _cell_patch(offs[j], offs[i], step, hatch="//", edgecolor="white", alpha=0.6)
                    ax.add_patch(hatch)
                    label = f"×\n{v:.2f}"
                else:
                    label = f"{v:.2f}"
                # dark text on the bright (yellow) end of viridis, light text on the dark end
                ax.text(
                    offs[j], offs[i], label, ha="center", va="center", fontsize=8, color="black" if v > 0.6 else "white"
                )
        ax.add_patch(_cell_patch(0.0, 0.0, step, edgecolor="red", linewidth=2.0))  # the original click
        ax.set_xticks(offs)
        ax.set_yticks(offs)
        where = ("right on screen", "down on screen") if to_display is not None else ("array columns", "array rows")
        ax.set_xlabel(f"offset (mm), {where[0]}")
        ax.set_ylabel(f"offset (mm), {where[1]}")
        mean = np.nanmean(grid) if np.isfinite(grid).any() else float("nan")
        ax.set_title(f"{(names or {}).get(method, method)}: mean Dice {mean:.3f}")
    fig.colorbar(image, ax=list(axes), label=f"Dice vs {result.reference}", shrink=0.9)
    fig.suptitle(f"click robustness, slice {result.slice} (× = click outside the object)", fontsize=10)
    return fig


def _cell_patch(x: float, y: float, step: float, **style):
    """An unfilled square over the grid cell centred at offset (x, y) mm (matplotlib Rectangle)."""
    from matplotlib.patches import Rectangle

    style.setdefault("linewidth", 0.0)
    return Rectangle((x - step / 2, y - step / 2), step, step, fill=False, **style)
