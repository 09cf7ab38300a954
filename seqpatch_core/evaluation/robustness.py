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

LiteMedSAM (method ``"litemedsam"``, with a :class:`~seqpatch_core.inference.boxes.BoxPredictor`)
takes a box, not a click: the box of the original click (the label's tight box on the slice when one
is given and not empty, else SeqPatch's mask at the original click grown by
:data:`~seqpatch_core.evaluation.boxes.SEQPATCH_MARGIN_PX`, or a box given by the caller) is moved by
each cell's offset, rounded to whole pixels, and clipped to the slice (:func:`shift_box`). The slice
is encoded once and the decoder answers every moved box; its ``grids_mm`` is the pixel of its
256 x 256 input in mm. A box clipped to no area (moved off the slice) is skipped like a click outside
the image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.base.progress import Progress
from seqpatch_core.base.tables import markdown_table
from seqpatch_core.evaluation.boxes import SEQPATCH_MARGIN_PX
from seqpatch_core.images.intensity import Window
from seqpatch_core.inference.boxes import Box, BoxPredictor, box_around
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models.litemedsam import ARCH, IMAGE_SIZE

log = logging.getLogger(__name__)

__all__ = ["RobustnessMap", "click_robustness", "robustness_figure", "robustness_table", "shift_box"]


@dataclass
class RobustnessMap:
    """Dice of every method over a grid of click offsets on one slice (see the module docstring).

    offsets_mm: (G,) offsets along y and along x; dice and grids_mm: method -> G x G rows (None where
    the click fell outside the image); outside: G x G bool; reference: "label" or "self"; point_yx:
    the original click (y, x) in slice px; slice: z; window: the held window's name; seconds: per
    method and "total"; prompt: LiteMedSAM's box at the original click, ``{"box": [z, y0, x0, y1,
    x1] (voxel indices, corners inclusive), "source": "label", "seqpatch", "unet" or "given"}`` (None
    without LiteMedSAM).
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
    prompt: dict | None = None

    def as_dict(self) -> dict:
        """The fields as JSON-ready data; ``prompt`` only with LiteMedSAM, so that the click methods'
        record keeps its fields."""
        out = asdict(self)
        if self.prompt is None:
            del out["prompt"]
        return out

    @property
    def methods(self) -> list[str]:
        """The methods measured, in their order."""
        return list(self.dice)

    def mean(self, method: str) -> float:
        """Mean Dice of ``method`` over the clicks inside the image."""
        return float(np.mean([v for row in self.dice[method] for v in row if v is not None]))

    def worst(self, method: str) -> float:
        """The lowest Dice of ``method`` over the clicks inside the image."""
        return float(min(v for row in self.dice[method] for v in row if v is not None))


def _inside(mask: np.ndarray, y: float, x: float) -> bool:
    """Whether the click (y, x) (slice px) lands on a foreground pixel of the (H, W) mask."""
    return bool(mask[int(round(y)), int(round(x))])


def shift_box(box: Box, dy: int, dx: int, shape_yx: tuple[int, int]) -> Box | None:
    """``box`` moved by (dy, dx) whole pixels (+y down, +x right) and clipped to a slice of
    ``shape_yx`` (H, W); None when what is left spans fewer than two pixels in y or in x (no area,
    :func:`~seqpatch_core.inference.boxes.check_box`)."""
    h, w = shape_yx
    y0, y1 = max(0, box.y0 + dy), min(h - 1, box.y1 + dy)
    x0, x1 = max(0, box.x0 + dx), min(w - 1, box.x1 + dx)
    if y1 <= y0 or x1 <= x0:
        return None
    return Box(box.z, y0, x0, y1, x1)


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
    boxes: BoxPredictor | None = None,
    box: Box | Sequence[float] | None = None,
    box_source: str = "given",
) -> RobustnessMap:
    """Dice of every method over a grid of click offsets on slice ``z`` (see the module docstring).

    point_yx: the original click (y, x) in slice px; label_slice: optional (H, W) reference, non-zero
    = object; progress: optional ``callable(fraction, text)``, called before each batch and at the end;
    chunk: clicks per batch (None or 0: each method's whole grid in one batch, the fastest; a small
    chunk lets ``progress`` advance while a method runs, with the same results); window: None for the
    predictor's setting; resolved once at the original click and held for every moved click and every
    method, so the map measures the networks, not a window rule that may switch between nearby clicks;
    coarsen: the second pass (None: the predictor's setting). ``methods`` may name ``"litemedsam"``,
    answered by ``boxes`` (holding the predictor's volume) after the click methods, from ``box``
    (``(z, y0, x0, y1, x1)`` on slice z, where it came from in ``box_source``; None: the module
    docstring's box), in chunks of ``chunk`` boxes. Raises InputError for a point outside the volume,
    ``grid`` < 1, ``step_mm`` <= 0, ``chunk`` < 0, or LiteMedSAM without ``boxes`` or without a box.
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
    clicked = [m for m in methods if m != ARCH]
    start_box = None
    if ARCH in methods:  # its box is checked before any network runs (SeqPatch's comes after)
        if boxes is None or boxes.volume is None or boxes.volume.shape != vol.shape:
            raise InputError(f"{ARCH} is not loaded with this image: it cannot take part")
        if box is not None:
            start_box = boxes.check_box(box.as_list() if isinstance(box, Box) else box)
        elif label_slice is not None:
            start_box, box_source = box_around(label_slice, z), "label"
        if start_box is not None and start_box.z != z:
            raise InputError(f"{ARCH}'s box is on slice {start_box.z}, the click on slice {z}")

    dices: dict[str, list[list[float | None]]] = {}
    grids: dict[str, list[list[float | None]]] = {}
    seconds: dict[str, float] = {}
    outside = np.zeros((grid, grid), dtype=bool)
    n = len(points)
    step = int(chunk) if chunk and int(chunk) < n else n

    def tick(done: int, what: str, start: int, total: int = n, noun: str = "clicks") -> None:
        if progress is not None:
            text = f"{start} of {total} {noun} done" if start else f"{total} {noun}"
            progress((done + start / total) / len(methods), f"{what}: {text}")

    def score(method: str, masks: Sequence[np.ndarray | None], grid_mm: Sequence[float | None]) -> None:
        """Each cell's Dice against the reference (a None mask: a skipped cell), and whether its click
        lies outside the object."""
        ref = label_slice if label_slice is not None else masks[centre]
        dices[method] = [[None] * grid for _ in range(grid)]
        grids[method] = [[None] * grid for _ in range(grid)]
        for (i, j), (y, x), mask, g in zip(cells, points, masks, grid_mm, strict=True):
            if mask is not None:
                dices[method][i][j] = dice(mask, ref)
                grids[method][i][j] = g
            outside[i, j] |= not _inside(ref, y, x)

    opts = {"preset": preset, "threshold": threshold, "coarsen": coarsen, "window": held}
    centre_masks = {}
    for mi, method in enumerate(clicked):
        t0 = time.perf_counter()
        answers = []
        for start in range(0, n, step):
            tick(mi, method, start)
            answers += predictor.predict_many(z, points[start : start + step], method, **opts)
        score(method, [r.mask for r in answers], [float(r.working_spacing) for r in answers])
        centre_masks[method] = answers[centre].mask
        seconds[method] = round(time.perf_counter() - t0, 3)
        log.info("%s: %d clicks in %.2f s", method, n, seconds[method])
    prompt = None
    if ARCH in methods:
        t0 = time.perf_counter()
        if start_box is None:
            start_box = _seqpatch_box(predictor, (z, y0, x0), centre_masks.get("seqpatch"), opts)
            box_source = "seqpatch"
        prompt = {"box": start_box.as_list(), "source": box_source}
        # the clicks' offsets in whole pixels: a box is voxel indices (rint: +-1.5 px move alike)
        dy = np.rint(offsets_mm / vol.spacing[1]).astype(int)
        dx = np.rint(offsets_mm / vol.spacing[2]).astype(int)
        moved = [shift_box(start_box, int(dy[i]), int(dx[j]), (h, w)) for i, j in cells]
        kept = [b.as_list() for b in moved if b is not None]
        found = []
        for start in range(0, len(kept), step):  # one encoder pass (cached), the decoder per chunk
            tick(len(clicked), ARCH, start, len(kept), "boxes")
            found += [r.mask for r in boxes.predict_many(kept[start : start + step])]
        masks = iter(found)
        grid_mm = _input_pixel_mm(vol.shape[1:], vol.spacing[1:])
        score(ARCH, [None if b is None else next(masks) for b in moved], [grid_mm] * n)
        seconds[ARCH] = round(time.perf_counter() - t0, 3)
        log.info("%s: %d boxes in %.2f s", ARCH, len(kept), seconds[ARCH])
    dices = {m: dices[m] for m in methods}  # in the caller's order
    grids = {m: grids[m] for m in methods}
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
        prompt=prompt,
    )


def _seqpatch_box(
    predictor: Predictor, point_zyx: tuple[int, float, float], mask: np.ndarray | None, opts: dict
) -> Box:
    """LiteMedSAM's box at the original click without a label there: SeqPatch's mask at the click
    (``mask``, or a SeqPatch pass when it was not among the methods) grown by SEQPATCH_MARGIN_PX, as
    the page and the evaluation prompt it; InputError without SeqPatch or when its mask is empty."""
    z, y, x = point_zyx
    if mask is None:
        if "seqpatch" not in predictor.models:
            raise InputError(f"{ARCH}'s box needs a label on the slice or the SeqPatch network")
        mask = predictor.predict_many(z, [(y, x)], "seqpatch", **opts)[0].mask
    found = box_around(mask, z, SEQPATCH_MARGIN_PX)
    if found is None:
        raise InputError(f"{ARCH} has no box: SeqPatch found no object at the click")
    return found


def _input_pixel_mm(shape_yx: tuple[int, int], spacing_yx: tuple[float, float]) -> float:
    """The side in mm of one pixel of LiteMedSAM's 256 x 256 input, which holds the slice's longest
    side: the grid its answers are made on, for the working grids' column."""
    return round(max(shape_yx[0] * spacing_yx[0], shape_yx[1] * spacing_yx[1]) / IMAGE_SIZE, 3)


def robustness_table(result: RobustnessMap) -> str:
    """Markdown: one Dice grid per method (rows y offsets, columns x offsets, mm), × = click outside;
    the working grids the clicks were answered on follow the mean."""
    offs = result.offsets_mm
    y, x = result.point_yx
    out = [
        f"slice {result.slice}, click (y, x) = ({y:.1f}, {x:.1f}), reference: {result.reference}; "
        "rows: y offset, columns: x offset (mm); × = click outside the object"
    ]
    if result.prompt is not None:
        out.append(
            f"{ARCH}'s box (z, y0, x0, y1, x1) = ({', '.join(str(v) for v in result.prompt['box'])}) from "
            f"{result.prompt['source']}, moved with the click in whole pixels"
        )
    for method in result.methods:
        used = sorted({g for row in result.grids_mm[method] for g in row if g is not None})
        where = ", ".join(f"{g:g}" for g in used)
        out += ["", f"**{method}** (mean Dice {result.mean(method):.3f}, min {result.worst(method):.3f}, "
                f"grids {where} mm, {result.seconds[method]:.2f} s)", ""]  # fmt: skip
        rows = []
        for i, row in enumerate(result.dice[method]):
            out_i = result.outside[i]
            cells = ["n/a" if v is None else f"{v:.3f}" + (" ×" if out_i[j] else "") for j, v in enumerate(row)]
            rows.append([f"{offs[i]:+g}", *cells])
        out.append(markdown_table(["y \\ x", *(f"{o:+g}" for o in offs)], rows))
    return "\n".join(out)


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
