"""The teaching tabs' events: click robustness, the whole object in 3D, ablations side by side and what
the sequential network computes along one ray. Functions of a :class:`~app.session.Session` returning
``{output name: value}`` (names declared in :mod:`app.outputs`), like :mod:`app.handlers`.

Every panel works on the *current click*: the point clicked on the slice being shown. LiteMedSAM, when
its weights are loaded, takes part in the robustness grid and the 3D object from the current click's
box, the one the main view gives it (:func:`app.handlers.click_box`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from app import render, zerogpu
from app.ablations import ABLATION_CAVEAT, ABLATIONS, PAPER_KEY, PREFIX, training_summary
from app.drawing import COLOURS, NAMES, outlined_text
from app.handlers import click_box
from app.notices import user_errors
from app.readouts import render_feature_strips
from app.render_rays import render_ray_grid
from app.session import BOX_WEIGHTS_MISSING, Object3D, ObjectStep, Session, require
from app.view import centres_inside, metric_cells, render_view
from seqpatch_core.base.errors import InputError, first_line
from seqpatch_core.base.metrics import dice
from seqpatch_core.base.progress import Progress
from seqpatch_core.evaluation.robustness import click_robustness, robustness_figure
from seqpatch_core.images.intensity import Window
from seqpatch_core.images.orientation import orientation
from seqpatch_core.inference.boxes import BoxPredictor
from seqpatch_core.inference.predictor import METHODS, Result
from seqpatch_core.inference.propagate import propagate, propagate_boxes
from seqpatch_core.method.models.litemedsam import ARCH as LITEMEDSAM

log = logging.getLogger(__name__)

#: Clicks per batch in the robustness grid: the progress bar advances after each batch.
ROBUSTNESS_CHUNK = 5


# ----------------------------------------------------------------------------- shared helpers


def current_click(session: Session) -> tuple[int, float, float]:
    """The (z, y, x) clicked on the slice being shown, or a one-line InputError."""
    s = require(session)
    res = s.results.get(s.z) or {}
    if not res:
        raise InputError(f"click on the object on slice {s.z} first (this panel works on the current click)")
    z, y, x = next(iter(res.values())).point_zyx
    return int(z), float(y), float(x)


def _click_window(session: Session) -> Window:
    return next(iter(session.results[session.z].values())).window


def _loaded_boxes(session: Session) -> BoxPredictor:
    """The session's LiteMedSAM holding its image (windowed once per image, as for the main view), or a
    one-line InputError without its weights."""
    s = session
    if s.boxes is None:
        raise InputError(BOX_WEIGHTS_MISSING)
    with s.using():
        if s.boxes.volume is not s.volume:
            s.boxes.set_volume(s.volume)
    return s.boxes


#: How the teaching tabs name where LiteMedSAM's box came from (:func:`app.handlers.click_box`).
BOX_SOURCES = {
    "label": "the label's box on the slice (an oracle prompt)",
    "seqpatch": "SeqPatch's mask plus a margin",
    "unet": "the U-net's mask plus a margin",
}


def _where(session: Session, click: tuple[int, float, float] | None = None) -> str:
    """The click a panel's result was computed for, in words (``click`` None: the current click).

    Long runs pass the click they started from, so a newer click never relabels an older result."""
    z, y, x = current_click(session) if click is None else click
    return f"slice {z}, click (y, x) = ({y:.1f}, {x:.1f})"


#: Width (px) the ablation tab's two ray grids are drawn at: half of a laptop's page each.
COMPARE_GRID_PX = 620


def ray_grid(result: Result, title: str | None = None, width: int | None = COMPARE_GRID_PX) -> np.ndarray:
    """The per-ray view of a seqpatch-architecture result (render's grid, drawn ``width`` px wide for
    the place it is shown at), with an optional title bar."""
    grid = render_ray_grid(result.patches, result.ray_likelihoods, inside=centres_inside(result), width=width)
    if not title:
        return grid
    bar = np.full((30, grid.shape[1], 3), 24, dtype=np.uint8)
    img = Image.fromarray(bar)
    outlined_text(ImageDraw.Draw(img), (10, 6), title, 16, fill=COLOURS["seqpatch"])
    return np.concatenate([np.asarray(img), grid], axis=0)


# ----------------------------------------------------------------------------- 1. click robustness


@user_errors
def robustness(
    session: Session | None, grid: float = 5, step_mm: float = 3.0, progress: Progress | None = None
) -> dict[str, Any]:
    """Dice heat maps over a grid of moved clicks around the current click (SeqPatch and the U-net),
    and of LiteMedSAM's box moved alike when its weights are loaded (the click's box: the label's on
    the slice, else SeqPatch's mask plus a margin, as on the main view)."""
    s = require(session)
    z, y, x = current_click(s)
    methods = [m for m in METHODS if m in s.predictor.models]
    if not methods:
        raise InputError("no model is loaded (see weights/README.md)")
    try:
        grid_n, step = int(grid), float(step_mm)
    except (TypeError, ValueError):
        raise InputError("the grid size and the step must be numbers") from None
    label = s.label[z] if s.label is not None else None
    boxes = box = None
    source, box_note = "given", ""
    if s.boxes is not None:
        try:
            box, source = click_box(s, z, s.results[z])
        except InputError as exc:  # the click methods' grid still runs; the note says why not LiteMedSAM
            box_note = f" {NAMES[LITEMEDSAM]} is left out: {first_line(exc)}."
        else:
            boxes = _loaded_boxes(s)
            methods.append(LITEMEDSAM)
            box_note = (
                f" {NAMES[LITEMEDSAM]}'s box, {BOX_SOURCES.get(source, source)}, moves with the click (in "
                "whole pixels, clipped to the slice): one encoder pass for the slice, the decoder for each box."
            )
    with s.using():  # the memory pool leaves the session alone while the grid runs
        result = click_robustness(
            s.predictor,
            z,
            (y, x),
            grid=grid_n,
            step_mm=step,
            methods=methods,
            label_slice=label,
            progress=progress,
            threshold=s.threshold,
            chunk=ROBUSTNESS_CHUNK,
            window=_click_window(s),  # every moved click in the window of the original one
            coarsen=s.second_pass,
            boxes=boxes,
            box=box,
            box_source=source,
        )
    s.robustness = result
    fig = robustness_figure(result, NAMES, orientation(s.volume.direction).slices.to_display)  # as the slice is shown
    if result.reference == "label":
        ref = f"**Scored against the label** on slice {z} (the ground truth): accuracy as the click moves."
    else:
        ref = (
            "**Scored against each method's own result at the original click** (no label loaded): "
            "how stable the answer is, not how right."
        )
    means = ", ".join(f"{NAMES[m]} mean Dice {result.mean(m):.3f} (worst {result.worst(m):.3f})" for m in methods)
    n_out = int(np.sum(result.outside))
    note = (
        f"{ref} {grid_n}×{grid_n} clicks, {step:g} mm apart, around {_where(s, (z, y, x))}, all in the "
        f"window {result.window}. {means}.{box_note} "
        f"Cells marked × (hatched): the moved click lies outside the object ({n_out} of them); "
        f"red frame: the original click; n/a: outside the image. "
        f"{result.seconds['total']:.1f} s."
    )
    return {"state": s, "rob_plot": fig, "rob_note": note}


# ----------------------------------------------------------------------------- 2. whole object in 3D


def _seed_component(label: np.ndarray, seed: tuple[int, float, float]) -> tuple[np.ndarray, str]:
    """The label's 3D connected component holding the seed, else the whole label (and which)."""
    lab = label != 0
    z, y, x = seed[0], int(round(seed[1])), int(round(seed[2]))
    if not lab[z, y, x]:
        return lab, "the whole label (the click is outside it)"
    comp, n = ndimage.label(lab)
    if n <= 1:
        return lab, "the label"
    return comp == comp[z, y, x], "the label's connected object at the click"


def _montage(session: Session, obj: Object3D, tiles: int = 8, tile_px: int = 240) -> np.ndarray:
    """Up to ``tiles`` slices across the object, its mask outlined (and the label dashed)."""
    s = session
    lo, hi = obj.prop.z_range
    zs = sorted({int(round(v)) for v in np.linspace(lo, hi, min(tiles, hi - lo + 1))})
    # zoom on the object: the box around the 3D mask (and the label) with a margin
    around = obj.prop.mask3d[lo : hi + 1].any(axis=0)
    if s.label is not None:
        around = around | (s.label[lo : hi + 1] != 0).any(axis=0)
    h, w = s.shape[1:]
    if around.any():
        ys, xs = np.nonzero(around)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min(), 32) * 0.8
    else:
        cy, cx, half = h / 2, w / 2, max(h, w) / 2
    y0, y1 = int(max(0, cy - half)), int(min(h, cy + half + 1))
    x0, x1 = int(max(0, cx - half)), int(min(w, cx + half + 1))
    f = render.display_factor((y1 - y0, x1 - x0))
    shown = orientation(s.volume.direction).slices.to_display  # the crops turned as the slice is shown
    pics = []
    for z in zs:
        crop = (slice(y0, y1), slice(x0, x1))
        contours = [render.Contour(obj.method, shown(obj.prop.mask3d[z][crop]))]
        if s.label is not None:
            contours.append(render.Contour("truth", shown(s.label[z][crop] != 0), dashed=True, fill=False))
        pic = render.render_overlay(render.grey_rgb(shown(s.windowed(z)[crop]), f), f, contours, opacity=0.25)
        img = Image.fromarray(pic)
        img.thumbnail((tile_px, tile_px))
        canvas = Image.new("RGB", (tile_px, tile_px), (24, 24, 24))
        canvas.paste(img, ((tile_px - img.width) // 2, (tile_px - img.height) // 2))
        outlined_text(ImageDraw.Draw(canvas), (6, tile_px - 22), f"z {z}", 15)
        pics.append(np.asarray(canvas))
    cols = min(4, len(pics))
    rows = -(-len(pics) // cols)
    pad = 4
    out = np.full((rows * (tile_px + pad) + pad, cols * (tile_px + pad) + pad, 3), 12, dtype=np.uint8)
    for i, p in enumerate(pics):
        r, c = divmod(i, cols)
        out[pad + r * (tile_px + pad) : pad + r * (tile_px + pad) + tile_px,
            pad + c * (tile_px + pad) : pad + c * (tile_px + pad) + tile_px] = p  # fmt: skip
    return out


@user_errors
def segment_object(
    session: Session | None, method: str = "seqpatch", progress: Progress | None = None
) -> dict[str, Any]:
    """Follow the clicked object through the neighbouring slices and keep its 3D mask: a click method
    by :func:`propagate`, LiteMedSAM box to box from the click's box by :func:`propagate_boxes`."""
    s = require(session)
    z, y, x = current_click(s)
    if method not in (*METHODS, LITEMEDSAM):
        raise InputError(f"unknown method {method!r}; choose one of {', '.join((*METHODS, LITEMEDSAM))}")
    if method in METHODS and method not in s.predictor.models:
        raise InputError(f"the {NAMES[method]} weights are not loaded (see weights/README.md)")
    nz = s.shape[0]

    def tick(n: int) -> None:
        if progress is not None:
            done = f"{n} slice{'s' if n > 1 else ''}"
            progress(min(n / max(nz, 1), 0.99), f"{NAMES[method]}: {done} of at most {nz} done")

    window, threshold, prompt = _click_window(s), s.threshold, ""
    if method == LITEMEDSAM:
        boxes = _loaded_boxes(s)
        box, source = click_box(s, z, s.results[z])
        with s.using():
            prop = propagate_boxes(boxes, box, on_slice=tick)
        # LiteMedSAM reads its own window and thresholds its own sigmoid at 0.5 (not the slider)
        window, threshold = None, 0.5
        prompt = (
            f" Its box on slice {z}: {BOX_SOURCES.get(source, source)}; on each next slice, the box of the "
            "previous slice's mask plus a few pixels, until the mask vanishes."
        )
    else:
        with s.using():
            prop = propagate(
                s.predictor,
                (z, y, x),
                method=method,
                threshold=threshold,
                window=window,
                coarsen=s.second_pass,
                on_slice=tick,
            )
    obj = Object3D(method=method, seed_zyx=(z, y, x), threshold=threshold, prop=prop, window=window)
    s.history.append(ObjectStep(method, s.objects3d.get(method)))  # undo takes it back
    s.objects3d[method] = obj
    lo, hi = prop.z_range
    stops = {"vanished": "object vanished", "area_jump": "area jump (leak?)", "volume_end": "end of volume",
             "empty_start": "empty at the click"}  # fmt: skip
    lines = [
        f"**{NAMES[method]}, whole object**: **{prop.volume_ml:.2f} mL** on slices **{lo}–{hi}** "
        f"({hi - lo + 1} slice{'s' if hi != lo else ''}), from the click at {_where(s, (z, y, x))}, threshold "
        f"{threshold:.2f}. Stopped: +z {stops.get(prop.stops.get('+z'), '–')}, "
        f"−z {stops.get(prop.stops.get('-z'), '–')}.{prompt}",
    ]
    if s.label is not None:
        ref, what = _seed_component(s.label, (z, y, x))
        e = metric_cells(prop.mask3d, ref, s.volume.spacing)
        voxel_ml = float(np.prod(s.volume.spacing)) / 1000.0
        lines.append(
            "| 3D vs " + what + " | Dice | CD x (mm) | CD y (mm) | CD z (mm) | HD95 (mm) | label (mL) |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n"
            f"| {NAMES[method]} | {e['Dice']} | {e['CD x']} | {e['CD y']} | "
            f"{e['CD z']} | {e['HD95']} | {float(ref.sum()) * voxel_ml:.2f} |"
        )
    else:
        lines.append("_Load a label to see the 3D Dice and centroid distances._")
    lines.append(
        "The object is drawn dotted on every slice it reaches and in the coronal and sagittal views; "
        "**Undo** takes it back. **Export** also writes this 3D mask (`…_" + method + "_3d_mask.nii.gz`)."
    )
    out = {"state": s, "obj_note": "\n\n".join(lines), "obj_view": _montage(s, obj), "files": None}
    view = render_view(s)  # the object on the slice shown, in both planes and in the status line
    out.update({k: view[k] for k in ("overlay", "status", "coronal", "sagittal")})
    return out


# ----------------------------------------------------------------------------- 3. ablations


@user_errors
def compare(session: Session | None, variant: str | None) -> dict[str, Any]:
    """Run an ablation variant on the current click; its ray grid beside the bidirectional model's."""
    s = require(session)
    z, y, x = current_click(s)
    if not variant:
        raise InputError("choose an ablation variant first")
    key = variant if variant.startswith(PREFIX) else PREFIX + variant
    if key not in s.predictor.models:
        name = key[len(PREFIX) :]
        raise InputError(f"the ablation {name!r} is not loaded (no weights in weights/ablations)")
    ref_key = PAPER_KEY if PAPER_KEY in s.predictor.models and key != PAPER_KEY else "seqpatch"
    if ref_key not in s.predictor.models:
        raise InputError("the SeqPatch weights are not loaded (see weights/README.md)")
    opts = {"threshold": s.threshold, "window": _click_window(s), "coarsen": s.second_pass}
    var = s.predictor.predict((z, y, x), method=key, **opts)
    ref = (s.results[z].get(ref_key) if ref_key == "seqpatch" else None) or s.predictor.predict(
        (z, y, x), method=ref_key, **opts
    )
    name = key[len(PREFIX) :]
    ref_name = ref_key[len(PREFIX) :] if ref_key.startswith(PREFIX) else "SeqPatch (the app's model)"
    out = {
        "state": s,
        "cmp_ref": ray_grid(ref, f"bidirectional: {ref_name}"),
        "cmp_var": ray_grid(var, f"ablation: {name}"),
    }
    why = (
        "trained with the same budget as the ablations" if ref_key == PAPER_KEY
        else "the app's main model (longer training, GroupNorm): not an equal-budget comparison"
    )  # fmt: skip
    rows = [
        "| model | Dice on this slice | area (px) | validation Dice (synthetic) | training |",
        "|---|---:|---:|---:|---|",
    ]
    described = f"{name}: {ABLATIONS.get(name, ('', ''))[1]}"
    for label, r, k in ((f"{ref_name} (bidirectional)", ref, ref_key), (described, var, key)):
        d = f"{dice(r.mask, s.label[z] != 0):.3f}" if s.label is not None else "–"
        val, budget = training_summary(s.predictor.models[k])
        rows.append(f"| {label} | {d} | {int(r.mask.sum())} | {val} | {budget} |")
    note = (
        f"Same click ({_where(s, (z, y, x))}), same patches, threshold {s.threshold:.2f}. Reference: "
        f"**{ref_name}**, {why}.\n\n" + "\n".join(rows) + "\n\n" + ABLATION_CAVEAT
    )
    if s.label is None:
        note += "\n\n_Load a label to see Dice._"
    out["cmp_note"] = note
    return out


# ----------------------------------------------------------------------------- 4. feature maps


@user_errors
def ray_features_view(session: Session | None, ray: float = 0) -> dict[str, Any]:
    """The bottom/middle/top feature maps of one ray of the current click (SeqPatch network)."""
    s = require(session)
    current_click(s)
    sp = s.results[s.z].get("seqpatch")
    if sp is None or sp.patches.ndim != 4:
        raise InputError("the SeqPatch network has not run on this click (are its weights loaded?)")
    n = sp.patches.shape[0]
    i = int(np.clip(round(float(ray or 0)), 0, n - 1))
    feats = zerogpu.features("seqpatch", s.predictor.models["seqpatch"], sp.patches[i])
    img = render_feature_strips(sp.patches[i], feats, sp.ray_likelihoods[i], ray=i, n_rays=n)
    sizes = "; ".join(
        f"{f.level}: {f.channels} channels of {f.after.shape[1]}×{f.after.shape[2]}"
        + ("" if f.source.startswith("rnn") else " (no recurrent unit)")
        for f in feats.values()
    )
    note = (
        f"Ray {i} ({360.0 * i / n:.1f}°) at {_where(s)}. Each small picture is the mean over channels "
        f"at one time step ({sizes}). *Encoder* rows see each patch alone; *after bi-RNN* rows also "
        "carry what the forward and backward memories bring from the rest of the ray."
    )
    return {"feat_img": img, "feat_note": note}
